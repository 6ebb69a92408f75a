"""`run_sql` and `list_data_frames` for engines with a tool loop; the same code as the builtin SQL mode."""

from __future__ import annotations

from typing import Any

from agents.engines.base import FileProduced
from agents.tools import Tool, ToolContext, ToolResult
from core.db import in_worker
from core.errors import ApplicationError
from dataframes.builtin import run_sql
from dataframes.charts import CHART_KINDS, MAX_POINTS, dataframe_chart
from dataframes.exports import EXPORT_FORMATS, dataframe_export
from dataframes.models import DataFrame
from dataframes.selectors import conversation_sql_tables, dataframe_slice


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


def _frame_of(context: ToolContext, name: Any) -> DataFrame | ToolResult:
    """The conversation's frame called `name`, or the error result the model reads."""
    if context.conversation_id is None:
        return ToolResult(text="This request has no conversation to save a file in.", status="error")
    frame = DataFrame.objects.filter(
        tenant_id=context.tenant_id, conversation_id=context.conversation_id, name=name
    ).first()
    return frame if frame is not None else ToolResult(text=f"No data frame {name!r} here.", status="error")


def _produced(file, text: str) -> ToolResult:
    return ToolResult(text=text, events=[FileProduced(file_ref=file.id, name=file.name)])


def _export_data_frame(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    fmt = arguments.get("format", "csv")
    if fmt not in EXPORT_FORMATS:
        return ToolResult(text=f"`format`: one of {', '.join(EXPORT_FORMATS)}.", status="error")
    frame = _frame_of(context, arguments.get("name"))
    if isinstance(frame, ToolResult):
        return frame
    table = dataframe_slice(frame=frame, offset=0, limit=max(frame.row_count, 1))
    try:
        file = dataframe_export(
            tenant_id=context.tenant_id, conversation_id=context.conversation_id, message_id=context.message_id,
            name=frame.name, table=table, fmt=fmt,
        )  # fmt: skip
    except ApplicationError as exc:
        return ToolResult(text=f"The file could not be saved: {exc.message}", status="error")
    return _produced(file, f"Saved {frame.name} ({frame.row_count:,} rows) as the file {file.name} ({file.id}).")


def _chart_data_frame(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    frame = _frame_of(context, arguments.get("name"))
    if isinstance(frame, ToolResult):
        return frame
    table = dataframe_slice(frame=frame, offset=0, limit=min(max(frame.row_count, 1), MAX_POINTS))
    kind, x, y = arguments.get("kind", "bar"), arguments.get("x"), arguments.get("y")
    try:
        file = dataframe_chart(
            tenant_id=context.tenant_id, conversation_id=context.conversation_id, message_id=context.message_id,
            name=frame.name, table=table, kind=kind, x=x, y=y,
        )  # fmt: skip
    except ApplicationError as exc:
        return ToolResult(text=f"No chart: {exc.message}", status="error")
    return _produced(file, f"Drew a {kind} chart of {y} by {x} from {frame.name}: the file {file.name} ({file.id}).")


async def chart_data_frame_tool(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    return await in_worker(_chart_data_frame)(context, arguments)


async def export_data_frame_tool(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    return await in_worker(_export_data_frame)(context, arguments)


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
        name="export_data_frame",
        description="Save a data frame of this conversation as a file the user can download: CSV, Excel (xlsx) "
        "or Parquet.",
        parameters={
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The data frame's name."},
                "format": {"type": "string", "enum": list(EXPORT_FORMATS), "description": "Default csv."},
            },
            "required": ["name"],
            "additionalProperties": False,
        },
        run=export_data_frame_tool,
    ),
    Tool(
        name="chart_data_frame",
        description="Draw a chart of a data frame of this conversation (one column against another) and save it "
        "as a PNG file the user can download.",
        parameters={
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The data frame's name."},
                "kind": {"type": "string", "enum": list(CHART_KINDS), "description": "Default bar."},
                "x": {"type": "string", "description": "The column along the x axis."},
                "y": {"type": "string", "description": "The numeric column along the y axis."},
            },
            "required": ["name", "x", "y"],
            "additionalProperties": False,
        },
        run=chart_data_frame_tool,
    ),
    Tool(
        name="list_data_frames",
        description="List the tables run_sql can read here: data frames (with rows and column types) and files.",
        parameters={"type": "object", "properties": {}, "additionalProperties": False},
        run=list_data_frames_tool,
    ),
]
