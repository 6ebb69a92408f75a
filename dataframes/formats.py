"""Rows out of Arrow tables: JSON-safe values, records/split bodies, CSV text and a Markdown preview."""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import io
import json
import math
from typing import Any

import pyarrow as pa


def json_value(value: Any) -> Any:
    """A value JSON can carry exactly: NaN/Infinity -> None, datetimes ISO 8601, decimals as exact strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return format(value, "f") if value.is_finite() else None
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return _iso_duration(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        # pyarrow gives maps as lists of (key, value) pairs
        return [json_value(item) for item in value]
    return str(value)


def _iso_duration(value: datetime.timedelta) -> str:
    seconds = value.total_seconds()
    sign = "-" if seconds < 0 else ""
    return f"{sign}PT{format(decimal.Decimal(str(abs(seconds))).normalize(), 'f')}S"


def json_columns(table: pa.Table) -> list[list[Any]]:
    """Each column of `table` as a list of JSON-safe values."""
    return [[json_value(value) for value in column.to_pylist()] for column in table.columns]


def records_body(table: pa.Table, *, total_rows: int, offset: int) -> dict[str, Any]:
    names = table.column_names
    rows = [dict(zip(names, row, strict=True)) for row in zip(*json_columns(table), strict=True)] if names else []
    return {"columns": names, "rows": rows, "total_rows": total_rows, "offset": offset}


def split_body(table: pa.Table, *, total_rows: int, offset: int) -> dict[str, Any]:
    rows = [list(row) for row in zip(*json_columns(table), strict=True)] if table.num_columns else []
    return {"columns": table.column_names, "data": rows, "total_rows": total_rows, "offset": offset}


def _csv_cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def csv_text(table: pa.Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in zip(*json_columns(table), strict=True):
        writer.writerow([_csv_cell(value) for value in row])
    return buffer.getvalue()


def _markdown_cell(value: Any) -> str:
    if value is None:
        return ""
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= 60 else text[:57] + "..."


def markdown_table(table: pa.Table) -> str:
    names = table.column_names
    if not names:
        return ""
    lines = [
        "| " + " | ".join(_markdown_cell(name) for name in names) + " |",
        "| " + " | ".join("---" for _ in names) + " |",
    ]
    for row in zip(*json_columns(table), strict=True):
        lines.append("| " + " | ".join(_markdown_cell(value) for value in row) + " |")
    return "\n".join(lines)


def dtype_name(data_type: pa.DataType) -> str:
    """Arrow's type name, without the `large_` that only says how Arrow addresses the bytes in memory."""
    return (
        str(data_type).replace("large_string", "string").replace("large_binary", "binary").replace("large_list", "list")
    )


def schema_of(table: pa.Table) -> list[dict[str, str]]:
    return [{"name": field.name, "dtype": dtype_name(field.type)} for field in table.schema]
