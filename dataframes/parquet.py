"""Parquet in storage: writing frames, local paths for readers, footer checks and row-group slices.

The storage may be a filesystem or S3 (django-storages), so everything goes through `default_storage`; a
stored object without a local path is copied, bounded, to a temporary file before pyarrow or DuckDB read it.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from core.errors import Invalid, PayloadTooLarge

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


class ParquetRefused(Invalid):
    """A Parquet file that is not read: damaged, or declaring more cells than the configured cap."""


def frame_storage_key(*, tenant_id: str, conversation_id: str) -> str:
    return f"dataframes/{tenant_id}/{conversation_id}/{secrets.token_hex(16)}.parquet"


def parquet_write_to(table: pa.Table, sink: str | BinaryIO) -> None:
    pq.write_table(table, sink, row_group_size=settings.DATAFRAMES_ROW_GROUP_SIZE, compression="zstd")


def parquet_store(*, table: pa.Table, tenant_id: str, conversation_id: str) -> str:
    """Write `table` to storage as Parquet; returns the storage key."""
    with tempfile.TemporaryFile() as handle:
        parquet_write_to(table, handle)
        handle.seek(0)
        key = frame_storage_key(tenant_id=tenant_id, conversation_id=conversation_id)
        return default_storage.save(key, File(handle))


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    parquet_write_to(table, sink)
    return sink.getvalue().to_pybytes()


@contextmanager
def stored_file_path(storage_key: str, *, suffix: str = "") -> Iterator[str]:
    """A local path with the stored object's bytes: the file itself when the storage has one, else a copy
    (at most DATAFRAMES_MAX_FILE_BYTES) removed on exit."""
    try:
        path = default_storage.path(storage_key)
    except NotImplementedError:
        path = None
    if path is not None and os.path.isfile(path):
        yield path
        return
    limit = settings.DATAFRAMES_MAX_FILE_BYTES
    descriptor, temporary_path = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(descriptor, "wb") as handle, default_storage.open(storage_key, "rb") as source:
            copied = 0
            while chunk := source.read(1024 * 1024):
                copied += len(chunk)
                if copied > limit:
                    raise PayloadTooLarge(f"The stored file is larger than {limit} bytes.")
                handle.write(chunk)
        yield temporary_path
    finally:
        os.unlink(temporary_path)


def parquet_check_footer(source: str | BinaryIO) -> pq.FileMetaData:
    """Read only the footer and refuse files that declare more than DATAFRAMES_MAX_CELLS cells: a few kB
    of dictionary/RLE-encoded pages can expand to billions of values."""
    try:
        metadata = pq.read_metadata(source)
    except (pa.ArrowException, OSError) as exc:
        raise ParquetRefused(f"Not a readable Parquet file: {exc}") from None
    cells = metadata.num_rows * max(1, metadata.num_columns)
    limit = settings.DATAFRAMES_MAX_CELLS
    if cells > limit:
        raise ParquetRefused(
            f"The Parquet file declares {metadata.num_rows:,} rows x {metadata.num_columns} columns "
            f"= {cells:,} cells, more than the limit of {limit:,}; it was not read.",
            details={"rows": metadata.num_rows, "columns": metadata.num_columns, "max_cells": limit},
        )
    return metadata


def parquet_read_range(path: str, *, columns: list[str], offset: int, limit: int) -> pa.Table:
    """Rows [offset, offset + limit) of `columns`, decoding only the row groups that hold them."""
    parquet = pq.ParquetFile(path)
    metadata = parquet.metadata
    end = min(offset + limit, metadata.num_rows)
    if offset >= end:
        return parquet.schema_arrow.empty_table().select(columns)
    groups, first_row, start = [], None, 0
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        if start + rows > offset and start < end:
            groups.append(index)
            first_row = start if first_row is None else first_row
        start += rows
        if start >= end:
            break
    table = parquet.read_row_groups(groups, columns=columns)
    return table.slice(offset - first_row, end - offset)


def parquet_head(storage_key: str, *, rows: int) -> pa.Table:
    with stored_file_path(storage_key, suffix=".parquet") as path:
        parquet = pq.ParquetFile(path)
        return parquet_read_range(path, columns=parquet.schema_arrow.names, offset=0, limit=rows)


def stored_files_delete(storage_keys: list[str]) -> None:
    for key in storage_keys:
        default_storage.delete(key)
