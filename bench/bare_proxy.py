"""The yardstick of the LLM path: a raw ASGI app that proxies a model's stream and stores nothing.

    OPENAI_BASE_URL=http://127.0.0.1:8100/v1 .venv/bin/uvicorn bench.bare_proxy:app --loop uvloop --http httptools

It takes the requests the benchmarks send to Parley, `POST .../stream` and `POST .../messages` with
`{"content": ...}`, asks the model server (`OPENAI_BASE_URL`, model `DEFAULT_MODEL`) for a streamed
completion of that one message with the same `openai` SDK, and answers as Parley does: `.../stream` as
server-sent events (`{"content": ...}` for each delta, then `{"done": ..., "status": "completed"}`), and
`.../messages` once the stream has ended, with the user's and the assistant's message as JSON. No auth, no
database, no log: what is left is the HTTP server, the SDK and the client's own work. One client for the
process, made at the lifespan's start-up and closed at its shutdown.
"""

from __future__ import annotations

import json
import os
import uuid

import openai

_client: openai.AsyncOpenAI | None = None


async def _lifespan(receive, send) -> None:
    global _client
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _client = openai.AsyncOpenAI(
                base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ.get("OPENAI_API_KEY") or "-", max_retries=0
            )
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _client.close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _event(data: dict) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        return await send({"type": "http.response.body", "body": b"ok"})
    content = json.loads(await _body(receive))["content"]
    stream = await _client.chat.completions.create(
        model=os.environ.get("DEFAULT_MODEL") or "bench",
        messages=[{"role": "user", "content": content}],
        stream=True,
        stream_options={"include_usage": True},
    )
    message_id = str(uuid.uuid4())
    if scope["path"].endswith("/stream"):
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _event({"message": {"id": message_id}}), "more_body": True})
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    event = _event({"content": chunk.choices[0].delta.content})
                    await send({"type": "http.response.body", "body": event, "more_body": True})
        done = _event({"done": True, "message": {"id": message_id, "status": "completed"}})
        return await send({"type": "http.response.body", "body": done})
    text = []
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
    messages = [
        {"id": str(uuid.uuid4()), "role": "user", "content": content, "status": "completed"},
        {"id": message_id, "role": "assistant", "content": "".join(text), "status": "completed"},
    ]
    body = json.dumps({"messages": messages}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
