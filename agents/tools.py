"""Tools an engine can call: the same code serves the builtin engine's modes and the openai tool loop.

A tool is an async function `(context: ToolContext, arguments: dict) -> ToolResult`. The apps above register
theirs at start-up (turns.apps): the files app's search_files and read_file, the dataframes app's run_sql
and list_data_frames.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agents.engines.base import Event


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


def tools_register(*tools: Tool) -> None:
    for tool in tools:
        _registry[tool.name] = tool


def registry() -> dict[str, Tool]:
    """Every registered tool by name."""
    return _registry
