"""A fake OpenAI-compatible Chat Completions server for the benchmarks, in a process of its own:

    .venv/bin/python -m bench.fake_openai --port 8100 [--chunks 100 --delay-ms 20]

Every `POST .../chat/completions` is answered, whatever the model and messages, with `--chunks` content
chunks `--delay-ms` apart: streamed (`"stream": true`) as `chat.completion.chunk` events, then a finish
chunk, a usage chunk when `stream_options.include_usage` asks, and `[DONE]`; otherwise one `chat.completion`
after the same delay. The reply's text is `reply_text(chunks)`, so that a client can check it arrived whole.

HTTP/1.1 with keep-alive and chunked transfer encoding on asyncio (uvloop), with every byte it sends encoded
once at start-up: its own CPU stays small and out of the figures of what it serves, and both sides of a
comparison (Parley, the bare proxy) keep their connections to it as they would to a real model server.
The chunks use the tests' format (tests/openai_server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvloop

from tests.openai_server import USAGE, completion_chunk


def reply_pieces(chunks: int) -> list[str]:
    return [f"w{i:03d} " for i in range(chunks)]


def reply_text(chunks: int) -> str:
    """The whole reply the server gives with `chunks` chunks."""
    return "".join(reply_pieces(chunks))


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Replies:
    """Every response's bytes, made once."""

    def __init__(self, chunks: int, delay: float) -> None:
        self.delay = delay
        head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n"
        self.stream_head = head % b"text/event-stream" + b"Transfer-Encoding: chunked\r\n\r\n"
        self.stream_chunks = [_http_chunk(completion_chunk({"role": "assistant", "content": ""}))] + [
            _http_chunk(completion_chunk({"content": piece})) for piece in reply_pieces(chunks)
        ]
        self.stream_end = _http_chunk(completion_chunk({}, finish="stop"))
        self.stream_usage = _http_chunk(completion_chunk(usage=USAGE))
        self.stream_done = _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        body = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": "bench",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply_text(chunks)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": USAGE,
            }
        ).encode()
        self.whole = head % b"application/json" + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        self.chunks = chunks


async def _serve_connection(replies: Replies, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            request = json.loads(await reader.readexactly(length)) if length else {}
            if not request.get("stream"):
                await asyncio.sleep(replies.delay * replies.chunks)
                writer.write(replies.whole)
                continue
            writer.write(replies.stream_head + replies.stream_chunks[0])
            for chunk in replies.stream_chunks[1:]:
                await asyncio.sleep(replies.delay)
                writer.write(chunk)
            writer.write(replies.stream_end)
            if (request.get("stream_options") or {}).get("include_usage"):
                writer.write(replies.stream_usage)
            writer.write(replies.stream_done)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass  # the client closed the connection (or sent what this server does not parse)
    finally:
        writer.close()


async def serve(port: int, chunks: int, delay: float) -> None:
    replies = Replies(chunks, delay)
    server = await asyncio.start_server(
        lambda reader, writer: _serve_connection(replies, reader, writer), "127.0.0.1", port, backlog=2048
    )
    print(f"fake OpenAI server on http://127.0.0.1:{port}/v1: {chunks} chunks {delay * 1000:g} ms apart", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per reply")
    parser.add_argument("--delay-ms", type=float, default=20, help="between consecutive content chunks")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.chunks, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
