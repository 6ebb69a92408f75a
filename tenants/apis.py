from datetime import timedelta

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import Invalid
from core.pagination import parse_day
from tenants.selectors import USAGE_GROUPS, usage_report

USAGE_DAYS_DEFAULT = 30
USAGE_DAYS_MAX = 366


class UsageRowSerializer(serializers.Serializer):
    day = serializers.DateField(required=False, help_text="With group_by=day.")
    agent_id = serializers.CharField(
        required=False, help_text="With group_by=agent (empty: usage without an agent, or before agents were counted)."
    )
    engine = serializers.CharField(required=False, help_text="With group_by=model.")
    model = serializers.CharField(required=False, help_text="With group_by=model (empty for the builtin engine).")
    turns = serializers.IntegerField(help_text="Replies generated (stateless /v1 requests included).")
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()


class UsageSerializer(serializers.Serializer):
    vars()["from"] = serializers.DateField(help_text="The first day counted.")  # (a keyword: no plain name)
    to = serializers.DateField(help_text="The last day counted.")
    group_by = serializers.ChoiceField(choices=list(USAGE_GROUPS))
    items = UsageRowSerializer(many=True)


class UsageView(APIView):
    @extend_schema(
        summary="The tenant's usage: turns and tokens by day, agent or model",
        description="What the tenant used, as recorded when each reply ended (UTC days): `turns` (replies "
        "generated, the stateless `/v1/conversation` included), `input_tokens` and `output_tokens`, summed "
        "per day (`group_by=day`, the default), per agent (`agent`: its id; a deleted agent's usage stays) or "
        "per engine and model (`model`). `from` and `to` are days, both included (default: the 30 days up to "
        "today), at most 366 days apart. Days without usage are not listed.\n\nErrors: 400 for a date that "
        "is not YYYY-MM-DD, `from` after `to`, a range over 366 days, or another `group_by`.",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="The first day (default: 29 days before `to`)."),
            OpenApiParameter("to", OpenApiTypes.DATE, description="The last day (default: today, UTC)."),
            OpenApiParameter("group_by", str, enum=list(USAGE_GROUPS), description="Default: day."),
        ],
        responses=UsageSerializer,
        examples=[
            OpenApiExample(
                "By model",
                value={
                    "from": "2025-03-01",
                    "to": "2025-03-31",
                    "group_by": "model",
                    "items": [
                        {"engine": "builtin", "model": "", "turns": 12, "input_tokens": 0, "output_tokens": 0},
                        {
                            "engine": "openai",
                            "model": "gpt-4o-mini",
                            "turns": 348,
                            "input_tokens": 512840,
                            "output_tokens": 40122,
                        },
                    ],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request, tenant_id):
        params = request.query_params
        until = parse_day(params.get("to"), default=timezone.now().date(), name="to")
        since = parse_day(params.get("from"), default=until - timedelta(days=USAGE_DAYS_DEFAULT - 1), name="from")
        group_by = params.get("group_by", "day")
        if group_by not in USAGE_GROUPS:
            raise Invalid(f"group_by: one of {', '.join(USAGE_GROUPS)}.", details={"group_by": group_by[:50]})
        if since > until:
            raise Invalid("from: after `to`.", details={"from": str(since), "to": str(until)})
        if (until - since).days + 1 > USAGE_DAYS_MAX:
            raise Invalid(f"from: at most {USAGE_DAYS_MAX} days before `to`.", details={"from": str(since)})
        items = usage_report(tenant=request.tenant, since=since, until=until, group_by=group_by)
        return Response(UsageSerializer({"from": since, "to": until, "group_by": group_by, "items": items}).data)
