"""`run_sql` and `list_data_frames` for engines with a tool loop; the same code as the builtin SQL mode."""

from __future__ import annotations

from typing import Any

from agents.tools import Tool, ToolContext, ToolResult
from core.db import in_worker
from dataframes.builtin import run_sql
from dataframes.selectors import conversation_sql_tables


def _run_sql(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    query, name = arguments.get("query"), arguments.get("name")
    if not isinstance(query, str) or not query.strip():
        return ToolResult(text="run_sql needs `query`: one SELECT (or WITH ... SELECT) statement.")
    if name is not None and not isinstance(name, str):
        return ToolResult(text="`name` must be a string (an identifier) when given.")
    _, text, events = run_sql(
        tenant_id=context.tenant_id,
        conversation_id=context.conversation_id,
        message_id=context.message_id,
        query=query,
        name=name or None,
    )
    return ToolResult(text=text, events=events)


def _list_data_frames(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    if context.conversation_id is None:
        return ToolResult(text="This request has no conversation, so there are no data frames.")
    tables = conversation_sql_tables(tenant_id=context.tenant_id, conversation_id=context.conversation_id)
    if not tables:
        return ToolResult(text="This conversation has no data frames or tabular files yet.")
    lines = ["Tables that run_sql can read:"]
    for table in tables:
        if table["columns"] is not None:
            columns = ", ".join(f"{column['name']} {column['dtype']}" for column in table["columns"])
            lines.append(f"- {table['name']} ({table['kind']}, {table['rows']:,} rows): {columns}")
        else:
            lines.append(f"- {table['name']} ({table['kind']})")
    return ToolResult(text="\n".join(lines))


async def run_sql_tool(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    return await in_worker(_run_sql)(context, arguments)


async def list_data_frames_tool(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    return await in_worker(_list_data_frames)(context, arguments)


TOOLS = [
    Tool(
        name="run_sql",
        description=(
            "Run one read-only SQL query (DuckDB dialect: SELECT or WITH ... SELECT) over this conversation's "
            "data frames and tabular files (each file is a table named after its file name without extension). "
            "The result is saved as a new data frame; the reply gives its shape and first rows."
        ),
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "The SQL query."},
                "name": {
                    "type": "string",
                    "description": "Name for the resulting data frame (an identifier); default result_<n>.",
                    "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        run=run_sql_tool,
    ),
    Tool(
        name="list_data_frames",
        description="List the tables run_sql can read here: data frames (with rows and column types) and files.",
        parameters={"type": "object", "properties": {}, "additionalProperties": False},
        run=list_data_frames_tool,
    ),
]
