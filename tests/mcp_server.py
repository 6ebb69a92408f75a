"""An MCP server for the tests, built with the `mcp` SDK's own server and served over its streamable HTTP
transport by uvicorn: `python -m tests.mcp_server PORT` (tests/test_mcp_tools.py starts it as a process).

Requests without `Authorization: Bearer mcp-test-key` are refused (401), so a test sees the tenant's
headers arrive; /old redirects to /mcp. Each tool call is counted: GET /calls answers how many were made,
by tool.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import sys
import zlib
from collections import Counter

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ImageContent

KEY = "mcp-test-key"
calls: Counter[str] = Counter()
server = MCPServer("calc")


def png(width: int, height: int) -> bytes:
    """A real PNG (grey pixels), small enough to write by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    calls["add"] += 1
    return a + b


@server.tool()
def greet(name: str) -> str:
    """Greets someone by name."""
    calls["greet"] += 1
    return f"Hello, {name}!"


@server.tool()
def picture() -> ImageContent:
    """A 16x8 grey picture."""
    calls["picture"] += 1
    return ImageContent(type="image", data=base64.b64encode(png(16, 8)).decode(), mime_type="image/png")


@server.tool()
def fail() -> str:
    """Always fails."""
    calls["fail"] += 1
    raise ValueError("the CRM is down")


@server.tool()
async def slow() -> str:
    """Answers after 5 seconds."""
    calls["slow"] += 1
    await asyncio.sleep(5)
    return "late"


@server.tool()
def big() -> str:
    """Answers 300,000 characters."""
    calls["big"] += 1
    return "y" * 300_000


mcp_app = server.streamable_http_app()


async def app(scope, receive, send):
    """The SDK's app behind a key check, plus GET /calls."""
    if scope["type"] == "http" and scope["path"] == "/calls":
        body = json.dumps(calls).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    if scope["type"] == "http" and scope["path"] == "/old":  # moved (on the same origin)
        await send({"type": "http.response.start", "status": 307, "headers": [(b"location", b"/mcp")]})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != f"Bearer {KEY}".encode():
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"a key is required"})
        return
    await mcp_app(scope, receive, send)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="on")
