from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from agents.selectors import agent_get, agent_list
from agents.serializers import AgentInputSerializer, AgentSerializer
from agents.services import agent_create, agent_update
from core.pagination import keyset_pagination

# What the OpenAPI document shows (ids as core.ids makes them).
AGENT_EXAMPLE = {
    "id": "agt_01jngadm50r4vdt6e95f73xrq5",
    "name": "Invoices assistant",
    "description": "Answers questions about the finance team's invoices.",
    "system_prompt": "You answer questions about invoices. Cite the files you use.",
    "engine": "openai",
    "model": "gpt-4o-mini",
    "options": {"temperature": 0.2, "max_tokens": 1024, "tools": ["search_files", "run_sql"]},
    "created_at": "2025-03-04T10:15:00.482113Z",
    "updated_at": "2025-03-04T10:15:00.482113Z",
}
_AGENT_RESPONSE = OpenApiExample("An agent", value=AGENT_EXAMPLE, response_only=True)
_INPUT_RULES = (
    "`name` takes 1 to 200 characters, `description` up to 2,000 and `system_prompt` up to 20,000 (kept as "
    "written, spaces included). `engine` is `builtin` (offline and deterministic, the default) or `openai` (an "
    "OpenAI-compatible server), which needs a `model` among those the operator offers. `options` takes only "
    "its documented keys: `temperature` 0 to 2, `max_tokens` 1 to 200,000, `history_tokens` 100 to 2,000,000, "
    "`tools` among `search_files`, `read_file`, `run_sql`, `list_data_frames`, `chunk_delay_ms` 0 to 60,000, "
    "`on_crash` `continue` or `fail`. Strings are JSON strings (a number is not a name), numbers JSON numbers, "
    "and no string may hold a NUL character."
)


@extend_schema_view(
    list=extend_schema(
        summary="List agents",
        description="The tenant's agents, newest first, a page at a time: `limit` (1 to 100, default 20) and, "
        "for the pages after the first, the `next` cursor the previous page gave (null on the last page).\n\n"
        "Errors: 400 for a `limit` out of range or a malformed `next` cursor.",
        responses=AgentSerializer(many=True),
        examples=[_AGENT_RESPONSE],
    ),
    create=extend_schema(
        summary="Create an agent",
        description="Creates an agent: its instructions, its engine and model, and options for its replies. "
        f"{_INPUT_RULES} Fields the API does not know are ignored.\n\nErrors: 400 for an invalid field (the "
        "message names it), an unknown option, or a `model` missing or not offered for the `openai` engine.",
        request=AgentInputSerializer,
        responses={201: AgentSerializer},
        examples=[
            OpenApiExample(
                "An agent on an OpenAI-compatible model",
                value={
                    field: AGENT_EXAMPLE[field]
                    for field in ("name", "description", "system_prompt", "engine", "model", "options")
                },
                request_only=True,
            ),
            OpenApiExample(
                "A builtin agent",
                value={"name": "Echo", "engine": "builtin"},
                request_only=True,
            ),
            _AGENT_RESPONSE,
        ],
    ),
    retrieve=extend_schema(
        summary="Get an agent",
        description="The agent with its settings.\n\nErrors: 404 for an agent that is not the tenant's.",
        responses=AgentSerializer,
        examples=[_AGENT_RESPONSE],
    ),
    partial_update=extend_schema(
        summary="Update an agent",
        description="Changes the fields given and keeps the others; `options`, when given, replaces the "
        "agent's options whole. Switching to the `openai` engine needs a `model` (given, or the agent's own). "
        f"{_INPUT_RULES} Replies started afterwards use the new settings.\n\n"
        "Errors: 400 for an invalid field, an unknown option, or a `model` missing or not offered "
        "for the `openai` engine; 404 for an agent that is not the tenant's.",
        request=AgentInputSerializer,
        responses=AgentSerializer,
        examples=[
            OpenApiExample(
                "A new system prompt", value={"system_prompt": "Answer in French, briefly."}, request_only=True
            ),
            OpenApiExample("New options", value={"options": {"temperature": 0.7}}, request_only=True),
            _AGENT_RESPONSE,
        ],
    ),
)
class AgentViewSet(viewsets.GenericViewSet):
    serializer_class = AgentSerializer
    pagination_class = keyset_pagination("-created_at", "-id")
    lookup_url_kwarg = "agent_id"

    def get_queryset(self):
        return agent_list(tenant=self.request.tenant)

    def list(self, request, tenant_id):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(AgentSerializer(page, many=True).data)

    def create(self, request, tenant_id):
        serializer = AgentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        agent = agent_create(tenant=request.tenant, data=serializer.validated_data)
        return Response(AgentSerializer(agent).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, tenant_id, agent_id):
        return Response(AgentSerializer(agent_get(tenant=request.tenant, agent_id=agent_id)).data)

    def partial_update(self, request, tenant_id, agent_id):
        agent = agent_get(tenant=request.tenant, agent_id=agent_id)
        serializer = AgentInputSerializer(instance=agent, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(AgentSerializer(agent_update(agent=agent, data=serializer.validated_data)).data)
