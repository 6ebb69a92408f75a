from __future__ import annotations

from typing import Any

import pyarrow as pa
from django.db.models import QuerySet

from conversations.models import Conversation
from core.errors import Invalid, NotFound
from dataframes.models import DataFrame, is_frame_name
from dataframes.parquet import parquet_head, parquet_read_range, stored_file_path, stored_parquet
from dataframes.sql import Sandbox, quote_identifier
from dataframes.tabular import conversation_file_tables


def dataframe_list(*, conversation: Conversation) -> QuerySet[DataFrame]:
    return DataFrame.objects.for_tenant(conversation.tenant_id).filter(conversation=conversation)


def dataframe_get(*, conversation: Conversation, name: str) -> DataFrame:
    """The conversation's frame called `name` (the conversation was already resolved for the tenant)."""
    if not is_frame_name(name):
        raise Invalid(
            "data_frame_name: must be an identifier (a letter or _, then up to 63 letters, digits or _).",
            details={"data_frame_name": name},
        )
    frame = dataframe_list(conversation=conversation).filter(name=name).first()
    if frame is None:
        raise NotFound("Data frame not found.", details={"data_frame_name": name})
    return frame


def dataframe_samples(*, frame: DataFrame, rows: int) -> pa.Table:
    return parquet_head(frame.storage_key, rows=rows)


def _check_columns(frame: DataFrame, names: list[str], parameter: str) -> None:
    known = set(frame.column_names)
    for name in names:
        if name not in known:
            raise Invalid(
                f"{parameter}: unknown column {name!r}.",
                details={parameter: name, "columns": frame.column_names},
            )


def dataframe_slice(
    *,
    frame: DataFrame,
    offset: int,
    limit: int,
    column_names: list[str] | None = None,
    order_by: list[tuple[str, bool]] | None = None,
) -> pa.Table:
    """Rows [offset, offset + limit) of the frame, optionally ordered by (column, descending) keys.

    Unordered slices decode only the row groups and columns they need; ordered ones run as a DuckDB top-N
    over the Parquet file. Column names are checked against the frame's schema before any SQL is built.
    """
    columns = column_names or frame.column_names
    _check_columns(frame, columns, "column_names")
    order_by = order_by or []
    _check_columns(frame, [name for name, _ in order_by], "order_by")
    if not order_by:
        with stored_parquet(frame.storage_key) as source:
            return parquet_read_range(source, columns=columns, offset=offset, limit=limit)
    with stored_file_path(frame.storage_key, suffix=".parquet") as path:
        keys = [f"{quote_identifier(name)} {'DESC' if desc else 'ASC'} NULLS LAST" for name, desc in order_by]
        # The file's row number breaks ties, so that pages of an ordered frame neither repeat nor skip rows
        # (unless the frame has a column of that name itself).
        tiebreak = "file_row_number" not in {name.lower() for name in frame.column_names}  # DuckDB ignores case
        if tiebreak:
            keys.append("file_row_number")
        query = (
            f"SELECT {', '.join(quote_identifier(name) for name in columns)} FROM frame "
            f"ORDER BY {', '.join(keys)} LIMIT {int(limit)} OFFSET {int(offset)}"
        )
        with Sandbox() as sandbox:
            sandbox.add_file_view("frame", "read_parquet", path, "file_row_number = true" if tiebreak else "")
            return sandbox.run(query, max_rows=limit).table


def conversation_sql_tables(*, tenant_id: str, conversation_id: str) -> list[dict[str, Any]]:
    """What SQL can read in a conversation: its frames, then its tabular files, with their table names."""
    frames = DataFrame.objects.filter(tenant_id=tenant_id, conversation_id=conversation_id).order_by("created_at", "id")
    tables: list[dict[str, Any]] = [
        {"name": frame.name, "kind": "data frame", "rows": frame.row_count, "columns": frame.schema}
        for frame in frames.only("name", "row_count", "schema")
    ]
    taken = {table["name"].lower() for table in tables}
    for file, name in conversation_file_tables(tenant_id=tenant_id, conversation_id=conversation_id, taken=taken):
        tables.append({"name": name, "kind": f"{file.kind} file {file.file_name}", "rows": None, "columns": None})
    return tables
