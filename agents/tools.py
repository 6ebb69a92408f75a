"""Tools an engine can call: the same code serves the builtin engine's modes and the openai tool loop.

A tool is an async function `(context: ToolContext, arguments: dict) -> ToolResult`. The apps above register
theirs at start-up (turns.wiring): the files app's search_files and read_file, the dataframes app's run_sql,
list_data_frames and the others; the files app also registers how a tool's file (an MCP server's image, say)
is kept in the conversation (`file_keeper_register`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from agents.engines.base import Event

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolContext:
    tenant_id: str
    conversation_id: str | None
    message_id: str | None
    file_refs: tuple[str, ...] = ()  # for the stateless API: the files the request attached
    first_citation: int = 1  # numbers already used by earlier tool calls of the same reply come before


@dataclass
class ToolResult:
    text: str  # what the model reads
    events: list[Event] = field(default_factory=list)  # what the client sees (citations, data frames)
    status: str = "ok"  # "error": the text says what went wrong (the model reads it and goes on)
    content: Any = None  # what the client sees of the result when it is not the text: a JSON value...
    content_type: str = "text"  # ...and its kind (agents.engines.base.TOOL_CONTENT_TYPES)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments
    run: Callable[[ToolContext, dict[str, Any]], Awaitable[ToolResult]]

    def openai_spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


_registry: dict[str, Tool] = {}


@dataclass(frozen=True)
class KeptFile:
    file_ref: str
    name: str
    content_type: str


# (context, name, bytes) -> the file, kept in the context's conversation with origin "agent" and its message;
# synchronous (it runs in a worker thread); an ApplicationError (e.g. over the quota) keeps nothing.
FileKeeper = Callable[[ToolContext, str, bytes], KeptFile]
_file_keepers: list[FileKeeper] = []


def file_keeper_register(keeper: FileKeeper) -> None:
    _file_keepers[:] = [keeper]


def file_keeper() -> FileKeeper:
    if not _file_keepers:
        raise LookupError("No file keeper is registered (turns.wiring registers the files app's).")
    return _file_keepers[0]


def tools_register(*tools: Tool) -> None:
    for tool in tools:
        _registry[tool.name] = tool


def registry() -> dict[str, Tool]:
    """Every registered tool by name."""
    return _registry


async def tool_call(tool: Tool | None, name: str, context: ToolContext, arguments: Any) -> ToolResult:
    """Run one call of an engine so that, whatever happens, the model gets a result it can read and the reply
    goes on: a tool the agent does not have, arguments that are not a JSON object, a failure and a timeout
    (TOOL_TIMEOUT_SECONDS) are error results; a text longer than TOOL_RESULT_MAX_CHARS is cut, saying so."""
    if tool is None:
        return ToolResult(f"Unknown tool {name!r}: this agent has no such tool.", status="error")
    if not isinstance(arguments, dict):
        return ToolResult(f"Invalid arguments for {name}: they must be a JSON object.", status="error")
    try:
        async with asyncio.timeout(settings.TOOL_TIMEOUT_SECONDS):
            result = await tool.run(context, arguments)
    except TimeoutError:
        return ToolResult(f"The tool {name} took longer than {settings.TOOL_TIMEOUT_SECONDS:g} s.", status="error")
    except Exception as exc:
        logger.exception("The tool %s failed", name)
        return ToolResult(f"The tool {name} failed ({type(exc).__name__}).", status="error")
    limit = settings.TOOL_RESULT_MAX_CHARS
    if len(result.text) > limit:
        cut = f"\n[cut: the result had {len(result.text):,} characters; the first {limit:,} are above]"
        result = ToolResult(result.text[:limit] + cut, result.events, result.status)  # (the text, cut, is shown)
    return result
