"""Tools an engine can call: the same code serves the builtin engine's modes and the openai tool loop.

A tool is an async function `(context: ToolContext, arguments: dict) -> ToolResult`. Apps contribute
theirs (files: search_files, read_file; dataframes: run_sql, list_data_frames) and they are listed in
`registry()`.
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


def registry() -> dict[str, Tool]:
    """Every tool by name; apps that are not built yet contribute none."""
    tools: dict[str, Tool] = {}
    for module_name in ("files.tools", "dataframes.tools"):
        try:
            module = __import__(module_name, fromlist=["TOOLS"])
        except ModuleNotFoundError:
            continue
        tools.update({tool.name: tool for tool in module.TOOLS})
    return tools
