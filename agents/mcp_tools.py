"""Tenants' MCP servers: their tools offered to the engine and called through the official `mcp` SDK's
client, over its streamable HTTP transport.

An agent names a server's tool as `<server>__<tool>` in `options.tools`, or the server alone for every tool
it lists; the model sees the same names. Listings are kept per process for MCP_TOOLS_CACHE_SECONDS (a
changed server is listed again). Each call opens its own session: nothing is held between the model's
rounds. Requests go out as agents/outbound.py allows (checked address, HTTPS outside TOOL_ALLOWED_NETWORKS,
the server's origin only, answers capped at its max_response_bytes), within its timeout_seconds for the
whole session. Results map to tool results: structured content is JSON, text is text, images and other
binary content are kept as the agent's files of the conversation; whatever fails, the model gets an error
result it can read, and the reply goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import mimetypes
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp_types
from django.conf import settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from agents.engines.base import FileProduced
from agents.models import MCP_SEPARATOR, TOOL_NAME_PATTERN, McpServer
from agents.outbound import Refused, pinned_client, pinned_transport
from agents.tools import KeptFile, Tool, ToolContext, ToolResult, file_keeper
from core.crypto import secret_decrypt
from core.db import in_worker
from core.errors import ApplicationError, BadGateway

logger = logging.getLogger(__name__)

LIST_PAGES_MAX = 10
TOOLS_PER_SERVER_MAX = 100
PARAMETERS_MAX_BYTES = 16 * 1024  # a tool whose argument schema is larger is left out (as HTTP tools refuse it)
LISTING_MAX_BYTES = 256 * 1024  # a server's tools past this many bytes of schemas and descriptions are left out
LISTINGS_KEPT_MAX = 256  # servers' listings a process keeps: 64 MiB at the very most
DESCRIPTION_MAX_CHARS = 2000
CLIENT_INFO = mcp_types.Implementation(name="parley", version="2")
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)


@dataclass(frozen=True)
class McpToolSpec:
    """A tool as the server lists it."""

    name: str
    description: str
    parameters: dict[str, Any]


# (server id, updated_at) -> (until when, its tools): a changed server is a new key.
_listings: dict[tuple[str, Any], tuple[float, list[McpToolSpec]]] = {}


def _what(server: McpServer) -> str:
    return f"The MCP server {server.name}"


@asynccontextmanager
async def _client(server: McpServer) -> AsyncIterator[Client]:
    transport = await pinned_transport(server.url, max_response_bytes=server.max_response_bytes, what=_what(server))
    headers = dict(secret_decrypt(server.headers_encrypted)) if server.headers_encrypted else {}
    refusals: list[int] = []  # the HTTP statuses of refused requests (the SDK's errors do not say them)

    async def note(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            refusals.append(response.status_code)

    async with pinned_client(transport, timeout=server.timeout_seconds, headers=headers) as http:
        http.event_hooks["response"].append(note)
        streams = streamable_http_client(server.url, http_client=http, max_sse_event_size=server.max_response_bytes)
        try:
            async with Client(streams, cache=None, client_info=CLIENT_INFO) as client:
                yield client
        except Exception as exc:
            if refusals:
                raise Refused(f"{_what(server)} answered HTTP {refusals[-1]}.") from exc
            raise


async def mcp_tool_specs(server: McpServer) -> list[McpToolSpec]:
    """The tools the server lists (kept for MCP_TOOLS_CACHE_SECONDS), within its timeout."""
    key, now = (server.id, server.updated_at), time.monotonic()
    if (kept := _listings.get(key)) and kept[0] > now:
        return kept[1]
    specs: list[McpToolSpec] = []
    listed = 0  # bytes of schemas and descriptions
    async with asyncio.timeout(server.timeout_seconds), _client(server) as client:
        cursor = None
        for _ in range(LIST_PAGES_MAX):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                size = len(json.dumps(tool.input_schema))
                if size > PARAMETERS_MAX_BYTES or listed + size > LISTING_MAX_BYTES:
                    logger.warning("The MCP server %s's tool %s is left out: its schema is too large", server.id,
                                   tool.name)  # fmt: skip
                    continue
                description = (tool.description or tool.title or "")[:DESCRIPTION_MAX_CHARS]
                specs.append(McpToolSpec(tool.name, description, tool.input_schema))
                listed += size + len(description)
            cursor = page.next_cursor
            if not cursor or len(specs) >= TOOLS_PER_SERVER_MAX:
                break
    for stale in [k for k, (until, _) in _listings.items() if until <= now]:
        _listings.pop(stale, None)
    while len(_listings) >= LISTINGS_KEPT_MAX:  # the oldest first (dicts keep their order)
        _listings.pop(next(iter(_listings)))
    _listings[key] = (now + settings.MCP_TOOLS_CACHE_SECONDS, specs[:TOOLS_PER_SERVER_MAX])
    return _listings[key][1]


def _servers_named(tenant_id: str, names: list[str]) -> list[tuple[McpServer, set[str] | None]]:
    """The tenant's servers that `names` name, each with the tools wanted (None: all of them)."""
    wanted: dict[str, set[str] | None] = {}
    for name in names:
        server, _, tool = name.partition(MCP_SEPARATOR)
        if not tool:
            wanted[server] = None
        elif wanted.get(server, set()) is not None:
            wanted.setdefault(server, set()).add(tool)
    servers = McpServer.objects.filter(tenant_id=tenant_id, name__in=wanted)
    return [(server, wanted[server.name]) for server in servers]


async def mcp_tools_for(tenant_id: str, names: list[str]) -> list[Tool]:
    """The tools of the tenant's MCP servers among `names`. A server that cannot be listed offers none (the
    reply goes on without them; the log says why)."""
    named = await in_worker(_servers_named)(tenant_id, names)
    listings = await asyncio.gather(*(mcp_tool_specs(server) for server, _ in named), return_exceptions=True)
    tools = []
    for (server, wanted), specs in zip(named, listings, strict=True):
        if isinstance(specs, BaseException):
            logger.warning("The MCP server %s (%s) could not be listed: %s", server.name, server.id, _reason(specs))
            continue
        for spec in specs:
            name = f"{server.name}{MCP_SEPARATOR}{spec.name}"
            if (wanted is None or spec.name in wanted) and _TOOL_NAME.fullmatch(name):
                tools.append(_as_tool(server, spec, name))
    return tools


def _as_tool(server: McpServer, spec: McpToolSpec, name: str) -> Tool:
    async def run(context: ToolContext, arguments: dict) -> ToolResult:
        return await mcp_tool_call(server, spec.name, context, arguments)

    parameters = spec.parameters if spec.parameters.get("type") == "object" else {"type": "object"}
    return Tool(name=name, description=spec.description, parameters=parameters, run=run)


async def mcp_tool_call(server: McpServer, tool: str, context: ToolContext, arguments: dict) -> ToolResult:
    """One call of the server's tool (see the module's docstring)."""
    try:
        async with asyncio.timeout(server.timeout_seconds), _client(server) as client:
            result = await client.call_tool(tool, arguments)
    except Exception as exc:  # whatever the transport, the SDK or the server did: the model reads why
        return ToolResult(f"{_what(server)}: the call of {tool} failed: {_reason(exc)}", status="error")
    return await _tool_result(server, tool, context, result)


def _reason(exc: BaseException) -> str:
    """What went wrong, in words, from the exception (the SDK's task groups wrap theirs in groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, Refused):
        return str(exc)
    if isinstance(exc, (TimeoutError, httpx2.TimeoutException)):
        return "no answer within its timeout."
    if isinstance(exc, MCPError):
        return f"the server answered an error: {str(exc)[:500]}"
    if isinstance(exc, httpx2.HTTPError):
        return f"it could not be reached ({type(exc).__name__})."
    return f"{type(exc).__name__}."


async def _tool_result(
    server: McpServer, tool: str, context: ToolContext, result: mcp_types.CallToolResult
) -> ToolResult:
    if result.is_error:  # its text only: nothing of a failed call is kept
        text = "\n".join(block.text for block in result.content if isinstance(block, mcp_types.TextContent))
        return ToolResult(text or f"{tool} failed (the server gave no reason).", status="error")
    texts: list[str] = []
    kept: list[KeptFile] = []
    for number, block in enumerate(result.content, start=1):
        if isinstance(block, mcp_types.TextContent):
            texts.append(block.text)
        elif isinstance(block, mcp_types.ResourceLink):
            texts.append(f"[{block.name}]({block.uri})")
        elif isinstance(block, mcp_types.EmbeddedResource) and isinstance(
            block.resource, mcp_types.TextResourceContents
        ):
            texts.append(block.resource.text)
        else:  # an image, audio, or a binary resource: a file of the conversation
            data, mime = (
                (block.resource.blob, block.resource.mime_type)
                if isinstance(block, mcp_types.EmbeddedResource)
                else (block.data, block.mime_type)
            )
            name = f"{server.name}-{tool}-{number}{mimetypes.guess_extension(mime or '') or '.bin'}"
            text, file = await _keep(context, name, data)
            texts.append(text)
            kept += [file] if file else []
    text = "\n".join(texts)
    events = [FileProduced(file_ref=file.file_ref, name=file.name) for file in kept]
    if result.structured_content is not None:
        try:
            value = json.loads(json.dumps(result.structured_content, allow_nan=False))
        except ValueError:
            return ToolResult(f"{tool} answered JSON that PostgreSQL cannot store (NaN).", status="error")
        return ToolResult(text or json.dumps(value), events=events, content=value, content_type="json")
    if kept:
        first = kept[0]
        kind = "image" if first.content_type.startswith("image/") else "file"
        reference = {"file_ref": first.file_ref, "name": first.name, "content_type": first.content_type}
        return ToolResult(text, events=events, content=reference, content_type=kind)
    return ToolResult(text, events=events)


async def _keep(context: ToolContext, name: str, data: str) -> tuple[str, KeptFile | None]:
    """The model's words for a binary block, and the file it is kept as (None when it is not kept)."""
    if context.conversation_id is None:
        return f"[{name}: not kept, this request has no conversation]", None
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return f"[{name}: not kept, its data is not base64]", None
    if not content:
        return f"[{name}: not kept, it is empty]", None
    try:
        file = await in_worker(file_keeper())(context, name, content)
    except ApplicationError as exc:
        return f"[{name}: not kept: {exc.message}]", None
    return f"[file {file.name} ({file.file_ref}), {file.content_type}]", file


async def mcp_server_tools(server: McpServer) -> list[Tool]:
    """The server's tools as agents name them, listed now (BadGateway, saying why, when it cannot be)."""
    _listings.pop((server.id, server.updated_at), None)
    try:
        specs = await mcp_tool_specs(server)
    except Exception as exc:
        raise BadGateway(f"{_what(server)} could not be listed: {_reason(exc)}") from None
    named = ((f"{server.name}{MCP_SEPARATOR}{spec.name}", spec) for spec in specs)
    return [_as_tool(server, spec, name) for name, spec in named if _TOOL_NAME.fullmatch(name)]
