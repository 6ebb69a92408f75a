"""The tenant's feedback, for a team that reviews answers: every rating with the question and the reply it
rated, newest first, a page at a time as JSON or all of a period as CSV."""

import csv
import datetime
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db.models import Q
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from conversations.selectors import feedback_list
from conversations.serializers import FeedbackReviewSerializer
from core.errors import Invalid
from core.pagination import KeysetPagination, parse_bool, parse_day

CSV_MAX_ROWS = 100_000  # one period's export; narrow `from` and `to` for more
CSV_CHUNK_ROWS = 500
CSV_COLUMNS = list(FeedbackReviewSerializer().fields)
FEEDBACK_REVIEW_EXAMPLE = {
    "message_id": "msg_01jngb9320er8x3d7fsjzd70va",
    "conversation_id": "conv_01jngak3y04wqfkxg2cnc1hw48",
    "agent_id": "agt_01jngadm50r4vdt6e95f73xrq5",
    "thumbs_up": False,
    "category": "inaccurate",
    "comment": "The credit note was not deducted.",
    "question": "What is the total of the March invoices?",
    "answer": "The March invoices total 48,250.00 EUR [1].",
    "model": "gpt-4o-mini",
    "created_at": "2025-03-04T10:31:12.004521Z",
    "updated_at": "2025-03-04T10:31:12.004521Z",
}


class FeedbackReviewPageSerializer(serializers.Serializer):
    items = FeedbackReviewSerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="The cursor of the next page; null on the last.")


class _Echo:
    """A file-like object whose write returns the line: csv.writer writes into a streamed response."""

    def write(self, value: str) -> str:
        return value


class FeedbackReviewView(APIView):
    @extend_schema(
        summary="List the feedback users gave, with the question and the rated reply",
        description="Every feedback of the tenant, the most recently given (or changed) first, each with the "
        "rated reply (`answer`, its `model`), the `question` it answered, and where it is (`agent_id`, "
        "`conversation_id`, `message_id`). `from` and `to` (days, UTC, both included) narrow to when it was "
        "given; `thumbs_up=true|false` to one verdict. A page at a time: `limit` (1 to 100, default 20) and the "
        "`next` cursor of the previous page; or `output_format=csv` for all of them at once (text/csv, a "
        "header line first, at most 100,000 rows: narrow the period for more).\n\nErrors: 400 for a date that "
        "is not YYYY-MM-DD, `from` after `to`, a `thumbs_up` other than true or false, an unknown "
        "`output_format`, a `limit` out of range or a malformed `next` cursor.",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="The first day (UTC)."),
            OpenApiParameter("to", OpenApiTypes.DATE, description="The last day (UTC), included."),
            OpenApiParameter("thumbs_up", bool, description="Only this verdict."),
            OpenApiParameter("output_format", str, enum=["json", "csv"], description="Default: json."),
        ],
        responses={
            (200, "application/json"): FeedbackReviewPageSerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="`output_format=csv`."),
        },
        examples=[
            OpenApiExample(
                "A thumbs-down", value={"items": [FEEDBACK_REVIEW_EXAMPLE], "next": None}, response_only=True
            )
        ],
    )
    def get(self, request, tenant_id):
        params = request.query_params
        since = parse_day(params.get("from"), default=None, name="from")
        until = parse_day(params.get("to"), default=None, name="to")
        if since is not None and until is not None and since > until:
            raise Invalid("from: after `to`.", details={"from": str(since), "to": str(until)})
        thumbs_up = parse_bool(params.get("thumbs_up"), default=None, name="thumbs_up")
        output_format = params.get("output_format", "json")
        if output_format not in ("json", "csv"):
            raise Invalid("output_format: json or csv.", details={"output_format": output_format[:50]})
        feedback = feedback_list(
            tenant=request.tenant, since=_start_of(since), until=_start_of(until, days=1), thumbs_up=thumbs_up
        )
        if output_format == "csv":
            response = StreamingHttpResponse(_csv_lines(feedback), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = 'attachment; filename="feedback.csv"'
            return response
        paginator = KeysetPagination(("-updated_at", "-id"))
        page = paginator.paginate_queryset(feedback, request)
        return paginator.get_paginated_response(FeedbackReviewSerializer(page, many=True).data)


def _start_of(day: datetime.date | None, *, days: int = 0) -> datetime.datetime | None:
    if day is None:
        return None
    return datetime.datetime.combine(day + datetime.timedelta(days=days), datetime.time(), tzinfo=datetime.UTC)


async def _csv_lines(feedback) -> AsyncIterator[str]:
    """The CSV, a few hundred rows read at a time (an async iterator: Django would hold a sync one whole
    in memory under ASGI), newest first, up to CSV_MAX_ROWS."""
    writer = csv.writer(_Echo(), lineterminator="\n")
    yield writer.writerow(CSV_COLUMNS)
    ordered, after, sent = feedback.order_by("-updated_at", "-id"), None, 0
    while sent < CSV_MAX_ROWS:
        page = (
            ordered
            if after is None
            else ordered.filter(Q(updated_at__lt=after[0]) | Q(updated_at=after[0], id__lt=after[1]))
        )
        rows = await sync_to_async(_shown)(page[: min(CSV_CHUNK_ROWS, CSV_MAX_ROWS - sent)])
        if not rows:
            return
        yield "".join(writer.writerow([_cell(shown[column]) for column in CSV_COLUMNS]) for _, shown in rows)
        sent += len(rows)
        after = rows[-1][0]


def _shown(page) -> list[tuple[tuple, dict]]:
    return [((row.updated_at, row.id), FeedbackReviewSerializer(row).data) for row in page]


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    # A cell a spreadsheet would run as a formula (CSV injection) is quoted as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
