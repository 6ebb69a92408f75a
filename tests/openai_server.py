"""A local server speaking the OpenAI Chat Completions streaming protocol, scripted by model name.

Models: `echo` (content deltas quoting the last user message, then a usage chunk), `reasoner`
(`reasoning_content` deltas first), `tool-caller` (first a streamed `tool_calls` request, then an answer
that quotes the tool result), `rate-limited` (429), `broken` (500), `stall` (one delta, then silence),
`malformed` (a chunk that is not JSON), `error-event` (an `error` chunk mid-stream), `separators` (U+2028,
U+2029 and U+0085 in the text, unescaped), `slow` (deltas 50 ms apart), `title` (a short title),
`search-twice` (two `search_files` calls in one round, then an answer), `exporter` (export_data_frame of
the frame `sales` as CSV, then the tool's answer as its own).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion_chunk(delta: dict | None = None, *, usage: dict | None = None, finish: str | None = None) -> bytes:
    """One `chat.completion.chunk` as a server-sent event (`delta` None: a chunk without choices)."""
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "test",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


class _Handler(BaseHTTPRequestHandler):
    server: OpenAIServer

    def log_message(self, *args):  # keep test output quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks, delay: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for chunk in chunks:
                if delay:
                    time.sleep(delay)
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-stream
            self.server.aborted += 1

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length))
        self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": request})
        model = request["model"]
        messages = request["messages"]
        last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        done = b"data: [DONE]\n\n"
        if model == "rate-limited":
            return self._json(429, {"error": {"message": "Rate limit reached", "type": "rate_limit"}})
        if model == "broken":
            return self._json(500, {"error": {"message": "boom", "type": "server_error"}})
        if model == "echo":
            return self._stream(
                [completion_chunk({"role": "assistant", "content": ""})]
                + [completion_chunk({"content": piece}) for piece in ("You said: ", last_user, ".")]
                + [completion_chunk({}, finish="stop"), completion_chunk(usage=USAGE), done]
            )
        if model == "cut":  # stopped by its token limit (finish_reason "length"); a continue says "...rest."
            if any(m["role"] == "assistant" for m in messages):
                return self._stream(
                    [completion_chunk({"content": " the rest."}), completion_chunk({}, finish="stop"), done]
                )
            return self._stream(
                [completion_chunk({"content": "The beginning of"}), completion_chunk({}, finish="length"), done]
            )
        if model == "slow":
            return self._stream([completion_chunk({"content": f"part{i} "}) for i in range(40)] + [done], delay=0.05)
        if model == "reasoner":
            return self._stream(
                [
                    completion_chunk({"reasoning_content": "Thinking about "}),
                    completion_chunk({"reasoning_content": "it."}),
                ]
                + [completion_chunk({"content": "Answer."}), completion_chunk(usage=USAGE), done]
            )
        if model == "tool-caller":
            if messages[-1]["role"] != "tool":
                call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}
                pieces = ['{"q": ', '"x"}'] if self.server.tool_arguments is None else [self.server.tool_arguments]
                return self._stream(
                    [
                        completion_chunk({"tool_calls": [call]}),
                        *(
                            completion_chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                            for p in pieces
                        ),
                        completion_chunk({}, finish="tool_calls"),
                        completion_chunk(usage=USAGE),
                        done,
                    ]
                )
            return self._stream(
                [
                    completion_chunk({"content": f"Tool said: {messages[-1]['content']}"}),
                    completion_chunk(usage=USAGE),
                    done,
                ]
            )
        if model == "exporter":  # export_data_frame of the frame `sales` as CSV, then an answer
            if messages[-1]["role"] != "tool":
                name, arguments = self.server.exporter_call
                function = {"name": name, "arguments": arguments}
                call = {"index": 0, "id": "call_x", "type": "function", "function": function}
                return self._stream([completion_chunk({"tool_calls": [call]}, finish="tool_calls"), done])
            return self._stream([completion_chunk({"content": messages[-1]["content"]}), done])
        if model == "search-twice":
            if messages[-1]["role"] != "tool":
                calls = [
                    {
                        "index": i,
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": "search_files", "arguments": args},
                    }
                    for i, args in enumerate(['{"query": "refund"}', '{"query": "shipping"}'])
                ]
                return self._stream([completion_chunk({"tool_calls": calls}, finish="tool_calls"), done])
            return self._stream([completion_chunk({"content": "See the policy."}), done])
        if model == "stall":
            self._stream([completion_chunk({"content": "Partial"})])
            time.sleep(self.server.stall_seconds)
            return None
        if model == "malformed":
            return self._stream([completion_chunk({"content": "Half"}), b"data: {not json\n\n", done])
        if model == "separators":  # line and paragraph separators in the text, unescaped, as servers send them
            content = json.dumps(
                {"choices": [{"index": 0, "delta": {"content": "a\u2028b\u2029c\x85d"}}]}, ensure_ascii=False
            )
            return self._stream([f"data: {content}\n\n".encode(), completion_chunk(usage=USAGE), done])
        if model == "error-event":  # an error in the middle of the stream, as OpenAI sends one
            error = b'data: {"error": {"message": "The server is overloaded.", "type": "server_error"}}\n\n'
            return self._stream([completion_chunk({"content": "Half"}), error, done])
        if model == "title":
            return self._stream([completion_chunk({"content": "Quarterly invoice totals"}), done])
        return self._json(404, {"error": {"message": f"unknown model {model}"}})


class OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.aborted = 0  # streams whose client disconnected before the end
        self.stall_seconds = 3.0
        self.tool_arguments: str | None = None  # what tool-caller's call sends as its arguments (default {"q": "x"})
        self.exporter_call = ("export_data_frame", '{"name": "sales", "format": "csv"}')  # exporter's call
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> OpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
