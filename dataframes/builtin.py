"""The builtin engine's SQL mode: a query in the message runs over the conversation's data and becomes a frame."""

from __future__ import annotations

import logging
import re

from agents.engines.base import (
    BuiltinAnswer,
    DataFrameProduced,
    FileProduced,
    ToolCallEnded,
    ToolCallStarted,
    TurnContext,
)
from core.errors import ApplicationError
from dataframes.charts import chart_request_in, dataframe_chart
from dataframes.exports import EXPORT_FORMATS, dataframe_export, export_format_in
from dataframes.formats import markdown_table
from dataframes.selectors import conversation_sql_tables
from dataframes.services import SqlRun, dataframe_create_from_sql

logger = logging.getLogger(__name__)

PREVIEW_ROWS = 10
SQL_CALL_ID = "builtin_run_sql"  # (one call a reply: the same on a resumed run)
FENCED_SQL = re.compile(r"```sql[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
# A message that is itself a query: SELECT or WITH first, after any `--` comment lines (e.g. `-- name: x`).
LEADING_SQL = re.compile(r"\A\s*(?:--[^\n]*\n\s*)*(?:SELECT|WITH)\b", re.IGNORECASE)


def sql_in_message(text: str) -> str | None:
    """The SQL a message asks to run: its first ```sql block, or the whole text when it starts with a query."""
    fenced = FENCED_SQL.search(text)
    if fenced:
        return fenced.group(1).strip() or None
    if LEADING_SQL.match(text):
        return text.strip()
    return None


def describe_sql_run(run: SqlRun) -> str:
    """Rows and columns of the saved result and a Markdown preview of its first rows."""
    table, frame = run.table, run.frame
    columns = ", ".join(f"`{name}`" for name in table.column_names)
    text = (
        f"The query returned {table.num_rows:,} row{'s' if table.num_rows != 1 else ''} and "
        f"{table.num_columns} column{'s' if table.num_columns != 1 else ''} ({columns}), "
        f"saved as the data frame `{frame.name}`."
    )
    if run.truncated:
        text += f" The result had more rows; only the first {table.num_rows:,} were kept (the configured cap)."
    if table.num_rows:
        text += "\n\n" + markdown_table(table.slice(0, PREVIEW_ROWS))
        if table.num_rows > PREVIEW_ROWS:
            text += f"\n\nShowing the first {PREVIEW_ROWS} of {table.num_rows:,} rows."
    return text


def describe_sql_failure(message: str, *, tenant_id: str, conversation_id: str) -> str:
    text = f"I could not run that query. {message}"
    try:
        names = [
            table["name"] for table in conversation_sql_tables(tenant_id=tenant_id, conversation_id=conversation_id)
        ]
    except Exception:  # the hint is optional; the explanation above is the answer
        logger.exception("Could not list the SQL tables of %s", conversation_id)
        names = []
    if names:
        text += "\n\nTables you can query here: " + ", ".join(f"`{name}`" for name in names) + "."
    else:
        text += "\n\nThis conversation has no data frames or tabular files yet."
    return text


def run_sql(
    *, tenant_id: str, conversation_id: str | None, message_id: str | None, query: str, name: str | None = None
):
    """(steps, text, events) for one query; never raises for a bad or refused query."""
    if conversation_id is None:
        text = "SQL runs over a conversation's data frames and files; this request has no conversation."
        return ["No conversation to query."], text, []
    try:
        run = dataframe_create_from_sql(
            tenant_id=tenant_id, conversation_id=conversation_id, message_id=message_id, query=query, name=name
        )
    except ApplicationError as exc:
        text = describe_sql_failure(exc.message, tenant_id=tenant_id, conversation_id=conversation_id)
        return [f"The query was not run: {exc.message}"], text, []
    except Exception:  # a reply that explains beats a failed message; the trace goes to the log
        logger.exception("SQL over conversation %s failed unexpectedly", conversation_id)
        text = describe_sql_failure(
            "It failed unexpectedly on the server.", tenant_id=tenant_id, conversation_id=conversation_id
        )
        return ["The query failed unexpectedly."], text, []
    event = DataFrameProduced(name=run.frame.name, rows=run.table.num_rows, columns=run.table.column_names)
    steps, text, events = run.steps, describe_sql_run(run), [event]
    if (fmt := export_format_in(query)) is not None:
        text += "\n\n" + _export(run, fmt, tenant_id, conversation_id, message_id, events)
    if (chart := chart_request_in(query)) is not None:
        text += "\n\n" + _chart(run, chart, tenant_id, conversation_id, message_id, events)
    return steps, text, events


def _chart(run: SqlRun, chart, tenant_id: str, conversation_id: str, message_id: str | None, events) -> str:
    """The `-- chart:` of a query that ran: the PNG file, as an event, and what the reply says of it."""
    kind, options = chart
    if "x" not in options or "y" not in options:
        return "No chart: write `-- chart: bar x=<column> y=<column>` (or line, scatter)."
    try:
        file = dataframe_chart(
            tenant_id=tenant_id, conversation_id=conversation_id, message_id=message_id, name=run.frame.name,
            table=run.table, kind=kind, x=options["x"], y=options["y"],
        )  # fmt: skip
    except ApplicationError as exc:
        return f"No chart: {exc.message}"
    events.append(FileProduced(file_ref=file.id, name=file.name))
    return f"Drew a {kind} chart of `{options['y']}` by `{options['x']}`: the file `{file.name}`."


def _export(run: SqlRun, fmt: str, tenant_id: str, conversation_id: str, message_id: str | None, events) -> str:
    """The `-- export:` of a query that ran: the file, as an event, and what the reply says of it."""
    if fmt not in EXPORT_FORMATS:
        return f"Not exported: `{fmt}` is not one of {', '.join(EXPORT_FORMATS)}."
    try:
        file = dataframe_export(
            tenant_id=tenant_id, conversation_id=conversation_id, message_id=message_id,
            name=run.frame.name, table=run.table, fmt=fmt,
        )  # fmt: skip
    except ApplicationError as exc:  # over the tenant's quota, say
        return f"The export could not be saved: {exc.message}"
    events.append(FileProduced(file_ref=file.id, name=file.name))
    return f"Saved as the file `{file.name}` ({file.size:,} bytes) in this conversation."


def may_answer_with_sql(context: TurnContext) -> bool:
    return sql_in_message(context.question) is not None


def answer_with_sql(context: TurnContext) -> BuiltinAnswer | None:
    """The SQL mode: None when the question holds no SQL, else the answer (errors explained in its text)."""
    query = sql_in_message(context.question)
    if query is None:
        return None
    steps, text, events = run_sql(
        tenant_id=context.tenant_id,
        conversation_id=context.conversation_id,
        message_id=context.message_id,
        query=query,
    )
    call = [
        ToolCallStarted(SQL_CALL_ID, "run_sql", {"query": query}),
        ToolCallEnded(SQL_CALL_ID, "ok" if events else "error", text),
    ]
    steps = ["Found a SQL query in the message.", *steps]
    return BuiltinAnswer(steps=steps, text=text, events=events, call=call)
