"""Cursor pagination over a unique sort key: `{"items": [...], "next": cursor}`.

The cursor holds the sort values of the last row returned, and the next page starts strictly after them
with a row-value comparison `(a, b) < (x, y)`, which PostgreSQL answers from the (tenant, ..., a, b)
index: page 10,000 costs what page 1 costs, and rows inserted meanwhile neither repeat nor hide others.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import F, Func, Value
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import Invalid

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class _Row(Func):
    function = "ROW"
    output_field = models.TextField()  # never read back; only compared


class _RowCompare(Func):
    template = "%(expressions)s"
    output_field = models.BooleanField()

    def __init__(self, lhs: _Row, operator: str, rhs: _Row):
        self.arg_joiner = f" {operator} "
        super().__init__(lhs, rhs)


def parse_bool(raw: str | None, *, default: bool, name: str) -> bool:
    """A query parameter that is `true` or `false` (400 for anything else: `1.5` is no answer)."""
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise Invalid(f"{name}: must be true or false.", details={name: raw})
    return raw.lower() == "true"


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
DAY_MIN, DAY_MAX = datetime.date(1970, 1, 1), datetime.date(9998, 12, 31)  # (a range a day either side still fits)


def parse_day(raw: str | None, *, default: datetime.date | None, name: str) -> datetime.date | None:
    """A query parameter that is a day, YYYY-MM-DD from 1970 to 9998 (400 for anything else, such as
    20250301 or 2025-W09-1, which ISO also allows)."""
    if raw is None:
        return default
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError
        day = datetime.date.fromisoformat(raw)
    except ValueError:
        raise Invalid(f"{name}: a date, YYYY-MM-DD.", details={name: raw[:50]}) from None
    if not DAY_MIN <= day <= DAY_MAX:
        raise Invalid(f"{name}: a date from {DAY_MIN} to {DAY_MAX}.", details={name: raw})
    return day


def parse_limit(raw: str | None, *, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT, name: str = "limit") -> int:
    if raw is None:  # (an empty `limit=` is a mistake, not the default)
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise Invalid(f"{name}: must be an integer from 1 to {maximum}.", details={name: raw})
    return limit


def encode_cursor(values: list[Any]) -> str:
    raw = json.dumps([v.isoformat() if hasattr(v, "isoformat") else v for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, fields: list[models.Field]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(fields):
            raise ValueError
        decoded = [field.to_python(value) for field, value in zip(fields, values, strict=True)]
        # PostgreSQL text cannot hold NUL: such a value would fail in the database, not compare.
        if any(value is None or (isinstance(value, str) and "\x00" in value) for value in decoded):
            raise ValueError
        return decoded
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError, DjangoValidationError):
        raise Invalid("next: malformed pagination cursor.", details={"next": cursor}) from None


NEXT_EXAMPLE = "WyIyMDI1LTAzLTA0VDEwOjE1OjAwLjQ4MjExMyswMDowMCIsImFndF8wMWpuZ2FkbTUwcjR2ZHQ2ZTk1ZjczeHJxNSJd"


class KeysetPagination(BasePagination):
    """Subclass with `ordering`, e.g. ("-updated_at", "-id"); every field sorts the same way."""

    ordering: tuple[str, ...] = ("-created_at", "-id")

    def __init__(self, ordering: tuple[str, ...] | None = None):
        if ordering is not None:
            self.ordering = ordering
        descending = {name.startswith("-") for name in self.ordering}
        assert len(descending) == 1, "keyset pagination needs one direction for every field"
        self.descending = descending.pop()
        self.field_names = [name.lstrip("-") for name in self.ordering]
        self.next_cursor: str | None = None

    def paginate_queryset(self, queryset: models.QuerySet, request: Request, view=None) -> list:
        limit = parse_limit(request.query_params.get("limit"))
        fields = [queryset.model._meta.get_field(name) for name in self.field_names]
        queryset = queryset.order_by(*self.ordering)
        cursor = request.query_params.get("next")
        if cursor:
            values = decode_cursor(cursor, fields)
            lhs = _Row(*[F(name) for name in self.field_names])
            rhs = _Row(*[Value(value, output_field=field) for value, field in zip(values, fields, strict=True)])
            queryset = queryset.filter(_RowCompare(lhs, "<" if self.descending else ">", rhs))
        rows = list(queryset[: limit + 1])
        self.next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            self.next_cursor = encode_cursor([getattr(rows[-1], field.attname) for field in fields])
        return rows

    def get_paginated_response(self, data: list) -> Response:
        return Response({"items": data, "next": self.next_cursor})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["items", "next"],
            "properties": {
                "items": schema,
                "next": {
                    "type": "string",
                    "nullable": True,
                    "description": "Cursor of the next page (pass as `?next=`); null on the last page.",
                    # Opaque: base64 of the last item's sort values. Also what a list's examples show.
                    "example": NEXT_EXAMPLE,
                },
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            },
            {
                "name": "next",
                "in": "query",
                "required": False,
                "description": "The `next` cursor of the previous page.",
                "schema": {"type": "string"},
            },
        ]


def keyset_pagination(*ordering: str) -> type[KeysetPagination]:
    return type("KeysetPagination", (KeysetPagination,), {"ordering": ordering})
