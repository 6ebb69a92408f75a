from __future__ import annotations

import logging
import re
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from django.db import IntegrityError, transaction

from conversations.models import Message
from core.errors import ApplicationError, Conflict
from dataframes.formats import schema_of
from dataframes.models import DataFrame, is_frame_name
from dataframes.parquet import (
    ParquetRefused,
    parquet_check_footer,
    parquet_store,
    stored_file_path,
    stored_files_delete,
)
from dataframes.sql import QueryFailed, Sandbox, paths_scrubbed, read_only_statement, referenced_tables
from dataframes.tabular import conversation_file_tables, register_tabular_file

logger = logging.getLogger(__name__)

NAME_COMMENT = re.compile(r"^\s*--\s*name\s*:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)
RESULT_NAME = re.compile(r"^result_(\d+)$")


def _storable(table: pa.Table) -> pa.Table:
    """Unique column names (DuckDB allows `SELECT 1 AS a, 2 AS a`), integers as integers and no types
    Parquet cannot hold."""
    names, seen = [], set()
    for index, name in enumerate(table.column_names):
        name = name or f"column_{index + 1}"
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate.lower())
        names.append(candidate)
    columns = []
    for column in table.columns:
        if pa.types.is_interval(column.type):
            column = pa.array([None if value is None else str(value) for value in column.to_pylist()], pa.string())
        elif pa.types.is_decimal(column.type) and column.type.scale == 0:
            # DuckDB's sum() of integers is a HUGEINT (decimal(38, 0)): keep it an integer when it fits.
            with suppress(pa.ArrowInvalid):
                column = column.cast(pa.int64())
        columns.append(column)
    return pa.table(columns, names=names)


def dataframe_create(
    *, tenant_id: str, conversation_id: str, name: str, table: pa.Table, message_id: str | None = None
) -> DataFrame:
    """Store `table` as Parquet and record it as the conversation's data frame `name`."""
    table = _storable(table)
    # The message's foreign key is checked only at commit; a stale id must not fail the caller's transaction.
    if message_id and not Message.objects.filter(id=message_id, conversation_id=conversation_id).exists():
        message_id = None
    try:
        storage_key = parquet_store(table=table, tenant_id=tenant_id, conversation_id=conversation_id)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        raise QueryFailed(f"The result has a column type that cannot be stored as Parquet: {exc}") from None
    try:
        with transaction.atomic():
            return DataFrame.objects.create(
                tenant_id=tenant_id,
                conversation_id=conversation_id,
                name=name,
                storage_key=storage_key,
                row_count=table.num_rows,
                schema=schema_of(table),
                message_id=message_id,
            )
    except IntegrityError:
        stored_files_delete([storage_key])
        raise Conflict(f"A data frame named {name!r} already exists in this conversation.") from None
    except BaseException:
        stored_files_delete([storage_key])
        raise


def dataframe_create_from_parquet(
    *, tenant_id: str, conversation_id: str, name: str, source: str | BinaryIO | pa.NativeFile
) -> DataFrame:
    """A data frame `name` of the conversation from a Parquet file (a stored frame's, or an imported
    one's bytes): checked as an upload is (ParquetRefused, a 400, when damaged or over the cell cap)."""
    parquet_check_footer(source)
    try:
        table = pq.read_table(source)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ParquetRefused(f"Not a readable Parquet file: {exc}") from None
    if any("\x00" in column["name"] or "\x00" in column["dtype"] for column in schema_of(table)):
        raise ParquetRefused("A column name holds a NUL character, which cannot be stored.")
    return dataframe_create(tenant_id=tenant_id, conversation_id=conversation_id, name=name, table=table)


def dataframes_delete_stored(*, tenant_id: str, conversation_ids: list[str]) -> None:
    """Remove the stored Parquet of these conversations' frames once the deleting transaction commits
    (the rows go with their conversations by cascade)."""
    keys = list(
        DataFrame.objects.filter(tenant_id=tenant_id, conversation_id__in=conversation_ids).values_list(
            "storage_key", flat=True
        )
    )
    if keys:
        transaction.on_commit(partial(_delete_quietly, keys))


def _delete_quietly(keys: list[str]) -> None:
    try:
        stored_files_delete(keys)
    except Exception:  # the rows are gone already; an orphaned object must not fail the request
        logger.exception("Could not delete %d stored data frame(s)", len(keys))


@dataclass
class SqlRun:
    frame: DataFrame
    table: pa.Table  # the result as stored (at most DATAFRAMES_SQL_MAX_ROWS rows)
    truncated: bool
    steps: list[str] = field(default_factory=list)


def query_frame_name(query: str) -> str | None:
    """The name a `-- name: x` comment asks for, if any."""
    match = NAME_COMMENT.search(query)
    return match.group(1) if match else None


def _next_result_name(existing: set[str]) -> str:
    numbers = [int(match.group(1)) for name in existing if (match := RESULT_NAME.match(name))]
    return f"result_{max(numbers, default=0) + 1}"


def _result_name_check(name: str, *, taken: dict) -> None:
    if not is_frame_name(name):
        raise QueryFailed(f"{name!r} cannot name a data frame: use a letter or _, then up to 63 letters, digits or _.")
    if name.lower() in taken:
        raise QueryFailed(f"A data frame named {name!r} already exists here; choose another `-- name:`.")


def dataframe_create_from_sql(
    *, tenant_id: str, conversation_id: str, message_id: str | None, query: str, name: str | None = None
) -> SqlRun:
    """Run a read-only query over the conversation's frames and tabular files and save the result as a new
    frame. Raises QueryFailed (or another ApplicationError) with a message meant for the user."""
    read_only_statement(query)
    name = name or query_frame_name(query)
    frames = {
        frame.name.lower(): frame
        for frame in DataFrame.objects.filter(tenant_id=tenant_id, conversation_id=conversation_id).only(
            "name", "storage_key", "row_count"
        )
    }
    if name is not None:
        _result_name_check(name, taken=frames)
    wanted = referenced_tables(query)
    steps = []
    with ExitStack() as stack:
        sandbox = stack.enter_context(Sandbox())
        registered = []
        for key, frame in frames.items():
            if wanted is None or key in wanted:
                path = stack.enter_context(stored_file_path(frame.storage_key, suffix=".parquet"))
                sandbox.add_file_view(frame.name, "read_parquet", path)
                registered.append(f"{frame.name} (data frame, {frame.row_count:,} rows)")
        for file, table_name in conversation_file_tables(
            tenant_id=tenant_id, conversation_id=conversation_id, taken=set(frames)
        ):
            if wanted is None or table_name.lower() in wanted:
                try:
                    register_tabular_file(sandbox, stack, file, table_name)
                except ApplicationError as exc:
                    raise QueryFailed(
                        f"The file {file.file_name!r} (table {table_name}) was not read: {paths_scrubbed(exc.message)}"
                    ) from None
                except duckdb.Error as exc:
                    raise QueryFailed(
                        f"The file {file.file_name!r} (table {table_name}) could not be read as {file.kind}: "
                        f"{paths_scrubbed(str(exc).splitlines()[0])}"
                    ) from None
                registered.append(f"{table_name} (file {file.file_name})")
        if registered:
            steps.append("Registered the tables the query reads: " + ", ".join(registered) + ".")
        started = time.monotonic()
        result = sandbox.run(query)
        elapsed_ms = (time.monotonic() - started) * 1000
    table = _storable(result.table)
    steps.append(
        f"Ran the query in DuckDB ({elapsed_ms:.0f} ms): {table.num_rows:,} rows x {table.num_columns} columns."
    )
    if name is None:
        name = _next_result_name(set(frames))
    frame = dataframe_create(
        tenant_id=tenant_id, conversation_id=conversation_id, name=name, table=table, message_id=message_id
    )
    steps.append(f"Saved the result as the data frame `{frame.name}`.")
    return SqlRun(frame=frame, table=table, truncated=result.truncated, steps=steps)
