"""Parquet in storage: writing frames, local paths for readers, footer checks and row-group slices.

The storage may be a filesystem or S3 (django-storages), so everything goes through `default_storage`. For
DuckDB, a stored object without a local path is copied, bounded, to a temporary file; pyarrow reads a slice
of one on S3 in place, with ranged requests for the footer and the row groups it needs.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage

from core.errors import Invalid, PayloadTooLarge

logger = logging.getLogger(__name__)

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


@functools.cache
def _s3_filesystem(
    endpoint_url: str | None, region: str | None, access_key: str | None, secret_key: str | None,
    session_token: str | None, addressing_style: str | None,
) -> pafs.S3FileSystem:  # fmt: skip
    endpoint = urlsplit(endpoint_url) if endpoint_url else None
    return pafs.S3FileSystem(
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        **({"region": region} if region else {}),  # else the AWS SDK's own resolution, like boto3's
        endpoint_override=endpoint.netloc if endpoint else None,
        scheme=endpoint.scheme if endpoint else "https",
        force_virtual_addressing=addressing_style == "virtual",
    )


def _s3_input_file(storage_key: str) -> pa.NativeFile | None:
    """The stored object as a file pyarrow reads with ranged requests, when the storage is S3."""
    from storages.backends.s3 import S3Storage

    storage = default_storage
    if not isinstance(storage, S3Storage):
        return None
    filesystem = _s3_filesystem(
        storage.endpoint_url, storage.region_name, storage.access_key, storage.secret_key,
        storage.security_token, storage.addressing_style,
    )  # fmt: skip
    key = posixpath.join(storage.location, storage_key) if storage.location else storage_key
    return filesystem.open_input_file(f"{storage.bucket_name}/{key}")


@contextmanager
def stored_parquet(storage_key: str) -> Iterator[str | pa.NativeFile]:
    """The stored Parquet file for pyarrow: read in place on S3 (only the footer and the row groups a slice
    needs cross the network), else as stored_file_path gives it."""
    try:
        source = _s3_input_file(storage_key)
    except OSError:  # pyarrow's S3 client disagrees with the storage's settings: copy the object instead
        logger.warning("Reading %s from S3 in place failed; copying it", storage_key, exc_info=True)
        source = None
    if source is None:
        with stored_file_path(storage_key, suffix=".parquet") as path:
            yield path
        return
    with source:
        yield source


def parquet_check_footer(source: str | BinaryIO) -> pq.FileMetaData:
    """Read only the footer and refuse files that declare more than DATAFRAMES_MAX_CELLS cells: a few kB
    of dictionary/RLE-encoded pages can expand to billions of values."""
    try:
        metadata = pq.read_metadata(source)
    except (pa.ArrowException, OSError, ValueError) as exc:  # (ValueError: a name that is not UTF-8)
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


def parquet_read_range(source: str | pa.NativeFile, *, columns: list[str] | None, offset: int, limit: int) -> pa.Table:
    """Rows [offset, offset + limit) of `columns` (None: all), decoding only the row groups that hold them."""
    parquet = pq.ParquetFile(source)
    columns = parquet.schema_arrow.names if columns is None else columns
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
    with stored_parquet(storage_key) as source:
        return parquet_read_range(source, columns=None, offset=0, limit=rows)


def stored_files_delete(storage_keys: list[str]) -> None:
    for key in storage_keys:
        default_storage.delete(key)
