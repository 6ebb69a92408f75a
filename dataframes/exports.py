"""Files the agent produces from a data frame: CSV, Excel (xlsx) or Parquet, stored in the conversation's file
space like an upload (`origin: "agent"`, the producing message), under the tenant's storage quota. The
builtin engine's SQL mode exports a result on `-- export: csv|xlsx|parquet`; engines with a tool loop call
`export_data_frame` (dataframes.tools)."""

from __future__ import annotations

import datetime
import decimal
import io
import re

import pyarrow as pa
from django.core.files.base import ContentFile

from dataframes.formats import csv_text, json_value
from dataframes.parquet import parquet_bytes
from files.models import File, Origin
from files.services import file_create_many
from tenants.models import Tenant

EXPORT_FORMATS = ("csv", "xlsx", "parquet")
EXPORT_COMMENT = re.compile(r"^\s*--\s*export\s*:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)


def export_format_in(query: str) -> str | None:
    """The format a `-- export: <format>` comment of the query asks for (lowercased), if any."""
    match = EXPORT_COMMENT.search(query)
    return match.group(1).lower() if match else None


def table_bytes(table: pa.Table, fmt: str) -> bytes:
    if fmt == "csv":
        return csv_text(table).encode()
    if fmt == "parquet":
        return parquet_bytes(table)
    import openpyxl  # (only for an export to Excel)

    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet("data")
    sheet.append(table.column_names)
    for row in table.to_pylist():
        sheet.append([_cell(value) for value in row.values()])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _cell(value):
    """A value Excel stores as is (numbers, text, booleans, dates without a time zone), else its JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, decimal.Decimal):  # (an Excel number is a double, as any spreadsheet reads it)
        return float(value)
    if isinstance(value, (datetime.date, datetime.time)) and getattr(value, "tzinfo", None) is None:
        return value
    shown = json_value(value)
    return shown if isinstance(shown, (int, float, str)) else str(shown)


def dataframe_export(
    *, tenant_id: str, conversation_id: str, message_id: str | None, name: str, table: pa.Table, fmt: str
) -> File:
    """Store the table as `<name>.<fmt>` in the conversation (an ApplicationError, e.g. 413 over the quota,
    stores nothing)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    tenant = Tenant.objects.get(pk=tenant_id)
    upload = ContentFile(table_bytes(table, fmt), name=f"{name}.{fmt}")
    (file,) = file_create_many(
        tenant=tenant, conversation_id=conversation_id, uploads=[upload], origin=Origin.AGENT, message_id=message_id
    )
    return file
