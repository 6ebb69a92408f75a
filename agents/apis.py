from adrf.views import APIView as AsyncAPIView
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from agents.mcp_tools import mcp_server_tools
from agents.selectors import agent_get, agent_list, http_tool_get, http_tool_list, mcp_server_get, mcp_server_list
from agents.serializers import (
    AgentInputSerializer,
    AgentSerializer,
    HttpToolCreatedSerializer,
    HttpToolInputSerializer,
    HttpToolSerializer,
    McpServerInputSerializer,
    McpServerSerializer,
    McpToolSerializer,
)
from agents.services import (
    agent_create,
    agent_update,
    http_tool_create,
    http_tool_delete,
    http_tool_update,
    mcp_server_create,
    mcp_server_delete,
    mcp_server_update,
)
from core.db import in_worker
from core.pagination import keyset_pagination
from core.schema import ErrorSerializer

# What the OpenAPI document shows (ids as core.ids makes them).
AGENT_EXAMPLE = {
    "id": "agt_01jngadm50r4vdt6e95f73xrq5",
    "name": "Invoices assistant",
    "description": "Answers questions about the finance team's invoices.",
    "system_prompt": "You answer questions about invoices. Cite the files you use.",
    "engine": "openai",
    "model": "gpt-4o-mini",
    "options": {"temperature": 0.2, "max_tokens": 1024, "tools": ["search_files", "run_sql"]},
    "retention_days": None,
    "created_at": "2025-03-04T10:15:00.482113Z",
    "updated_at": "2025-03-04T10:15:00.482113Z",
}
_AGENT_RESPONSE = OpenApiExample("An agent", value=AGENT_EXAMPLE, response_only=True)
_INPUT_RULES = (
    "`name` takes 1 to 200 characters, `description` up to 2,000 and `system_prompt` up to 20,000 (kept as "
    "written, spaces included). `engine` is `builtin` (offline and deterministic, the default) or `openai` (an "
    "OpenAI-compatible server), which needs a `model` among those the operator offers. `options` takes only "
    "its documented keys: `temperature` 0 to 2, `max_tokens` 1 to 200,000, `history_tokens` 100 to 2,000,000, "
    "`tools` among `search_files`, `read_file`, `run_sql`, `list_data_frames`, `export_data_frame`, "
    "`chart_data_frame`, the tenant's own tools by name (`/tools`) and its MCP servers' (`<server>__<tool>`, or "
    "`<server>` for all of them; `/mcp-servers`); without the list, all the builtin ones), "
    "`chunk_delay_ms` 0 to 60,000, "
    "`on_crash` `continue` or `fail`. `retention_days` 1 to 36,500, or null for the tenant's setting: its "
    "conversations idle that long are deleted. Strings are JSON strings (a number is not a name), numbers JSON "
    "numbers, and no string may hold a NUL character."
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
        "message names it), an unknown option or tool, or a `model` missing or not offered for the `openai` engine.",
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
        "Errors: 400 for an invalid field, an unknown option or tool, or a `model` missing or not offered "
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
        serializer = AgentInputSerializer(data=request.data, context={"tenant": request.tenant})
        serializer.is_valid(raise_exception=True)
        agent = agent_create(tenant=request.tenant, data=serializer.validated_data)
        return Response(AgentSerializer(agent).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, tenant_id, agent_id):
        return Response(AgentSerializer(agent_get(tenant=request.tenant, agent_id=agent_id)).data)

    def partial_update(self, request, tenant_id, agent_id):
        agent = agent_get(tenant=request.tenant, agent_id=agent_id)
        serializer = AgentInputSerializer(
            instance=agent, data=request.data, partial=True, context={"tenant": request.tenant}
        )
        serializer.is_valid(raise_exception=True)
        return Response(AgentSerializer(agent_update(agent=agent, data=serializer.validated_data)).data)


# --- Tenants' HTTP tools -----------------------------------------------------------------------------------

TOOL_EXAMPLE = {
    "id": "tool_01jngcq1m2f6d8x0v3h7k9w4tb",
    "name": "order_status",
    "description": "The status of a customer order, by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order": {"type": "string", "description": "The order number, e.g. A-1042."}},
        "required": ["order"],
    },
    "url": "https://tools.acme.example/order-status",
    "header_names": ["Authorization"],
    "timeout_seconds": 10.0,
    "max_response_bytes": 100000,
    "created_at": "2025-03-04T10:20:00.120034Z",
    "updated_at": "2025-03-04T10:20:00.120034Z",
}
_TOOL_RESPONSE = OpenApiExample("A tool", value=TOOL_EXAMPLE, response_only=True)
_TOOL_RULES = (
    "`name`: letters, digits, `_` and `-` (1 to 64, starting with a letter), unique among the tenant's tools and "
    "none of the builtin tools'. `description`: 1 to 2,000 characters, what the model reads. `parameters`: a "
    'JSON Schema of type object (default `{"type": "object"}`, at most 16 KiB); the model\'s arguments are '
    "checked against it before any call. `url`: HTTPS; plain HTTP and private, loopback or link-local "
    "addresses only within the operator's TOOL_ALLOWED_NETWORKS. `headers`: up to 20, sent with each call, "
    "stored encrypted and never shown again (only `header_names`); `Host`, `Content-Type`, `Content-Length`, "
    "`User-Agent` and the `webhook-*` signature headers are Parley's. `timeout_seconds` 0.5 to 60 (default "
    "10), `max_response_bytes` 1 to 1,000,000 (default 100,000). Any other field is refused."
)


@extend_schema_view(
    list=extend_schema(
        summary="List the tenant's HTTP tools",
        description="The tenant's own tools, newest first, a page at a time: `limit` (1 to 100, default 20) and "
        "the `next` cursor of the previous page. Header values and signing secrets are never shown.\n\nErrors: "
        "400 for a `limit` out of range or a malformed `next` cursor.",
        responses=HttpToolSerializer(many=True),
        examples=[_TOOL_RESPONSE],
    ),
    create=extend_schema(
        summary="Define an HTTP tool",
        description="A tool agents can call by naming it in `options.tools`: Parley POSTs the model's arguments "
        "as JSON to `url`, signed as Standard Webhooks sign (`webhook-id`, `webhook-timestamp`, "
        '`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under `signing_secret`), and gives '
        f"the model the answer (JSON or text). The answer holds `signing_secret`, shown this once. {_TOOL_RULES}"
        "\n\nErrors: 400 for an invalid field (the message names it) or a name already used.",
        request=HttpToolInputSerializer,
        responses={201: HttpToolCreatedSerializer},
        examples=[
            OpenApiExample(
                "An order status service",
                value={
                    **{key: TOOL_EXAMPLE[key] for key in ("name", "description", "parameters", "url")},
                    "headers": {"Authorization": "Bearer the-service-key"},
                },
                request_only=True,
            ),
            OpenApiExample(
                "The tool, with its secret",
                value={**TOOL_EXAMPLE, "signing_secret": "whsec_MfKQ9r8GKYqkbvAU7Xq3tBJ2Qn8L0yVd"},
                response_only=True,
            ),
        ],
    ),
    retrieve=extend_schema(
        summary="Get an HTTP tool",
        description="One of the tenant's tools, without its header values or secret.\n\nErrors: 404 for a tool "
        "that is not the tenant's.",
        responses=HttpToolSerializer,
        examples=[_TOOL_RESPONSE],
    ),
    partial_update=extend_schema(
        summary="Change an HTTP tool",
        description=f"Changes the fields given; `headers` given replace them all. {_TOOL_RULES}\n\nErrors: 400 for "
        "an invalid field or a name already used; 404 for a tool that is not the tenant's.",
        request=HttpToolInputSerializer(partial=True),
        responses=HttpToolSerializer,
        examples=[
            OpenApiExample("A longer timeout", value={"timeout_seconds": 20}, request_only=True),
            _TOOL_RESPONSE,
        ],
    ),
    destroy=extend_schema(
        summary="Delete an HTTP tool",
        description="Deletes the tool, and answers it as it was: agents that name it no longer get it (their "
        "replies go on without it).\n\nErrors: 404 for a tool that is not the tenant's.",
        responses={200: HttpToolSerializer},
        examples=[_TOOL_RESPONSE],
    ),
)
class HttpToolViewSet(viewsets.GenericViewSet):
    serializer_class = HttpToolSerializer
    pagination_class = keyset_pagination("-created_at", "-id")
    lookup_url_kwarg = "tool_id"

    def list(self, request, tenant_id):
        page = self.paginate_queryset(http_tool_list(tenant=request.tenant))
        return self.get_paginated_response(HttpToolSerializer(page, many=True).data)

    def create(self, request, tenant_id):
        serializer = HttpToolInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tool, secret = http_tool_create(tenant=request.tenant, data=serializer.validated_data)
        body = {**HttpToolSerializer(tool).data, "signing_secret": secret}
        return Response(HttpToolCreatedSerializer(body).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, tenant_id, tool_id):
        return Response(HttpToolSerializer(http_tool_get(tenant=request.tenant, tool_id=tool_id)).data)

    def partial_update(self, request, tenant_id, tool_id):
        tool = http_tool_get(tenant=request.tenant, tool_id=tool_id)
        serializer = HttpToolInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(HttpToolSerializer(http_tool_update(tool=tool, data=serializer.validated_data)).data)

    def destroy(self, request, tenant_id, tool_id):
        tool = http_tool_get(tenant=request.tenant, tool_id=tool_id)
        body = HttpToolSerializer(tool).data
        http_tool_delete(tool=tool)
        return Response(body)


# --- Tenants' MCP servers ----------------------------------------------------------------------------------

MCP_SERVER_EXAMPLE = {
    "id": "mcp_01jngd2x8q4r7v1m3k5t9w0yza",
    "name": "crm",
    "url": "https://mcp.acme.example/mcp",
    "header_names": ["Authorization"],
    "timeout_seconds": 10.0,
    "max_response_bytes": 100000,
    "created_at": "2025-03-04T10:25:00.512301Z",
    "updated_at": "2025-03-04T10:25:00.512301Z",
}
_MCP_SERVER_RESPONSE = OpenApiExample("An MCP server", value=MCP_SERVER_EXAMPLE, response_only=True)
_MCP_SERVER_RULES = (
    "`name`: letters, digits, `-` and single `_` (1 to 32, starting with a letter, no `__`), unique among the "
    "tenant's MCP servers and tools; agents name its tools `<name>__<tool>`, or `<name>` for all of them. "
    "`url`: the server's streamable HTTP endpoint, HTTPS; plain HTTP and private, loopback or link-local "
    "addresses only within the operator's TOOL_ALLOWED_NETWORKS. `headers`: up to 20 (an `Authorization` "
    "bearer token, say), sent with each request, stored encrypted and never shown again (only `header_names`); "
    "`Host`, `Accept`, `Content-Type`, `Content-Length`, `User-Agent`, `Last-Event-ID`, `Mcp-Session-Id` and "
    "`Mcp-Protocol-Version` are the protocol's. `timeout_seconds` 0.5 to 60 (default 10) for a whole listing "
    "or call (a call also ends at the operator's TOOL_TIMEOUT_SECONDS, 30 by default), `max_response_bytes` 1 "
    "to 1,000,000 (default 100,000) for each answer, read uncompressed. Any other field is refused."
)


@extend_schema_view(
    list=extend_schema(
        summary="List the tenant's MCP servers",
        description="The tenant's MCP servers, newest first, a page at a time: `limit` (1 to 100, default 20) "
        "and the `next` cursor of the previous page. Header values are never shown.\n\nErrors: 400 for a "
        "`limit` out of range or a malformed `next` cursor.",
        responses=McpServerSerializer(many=True),
        examples=[_MCP_SERVER_RESPONSE],
    ),
    create=extend_schema(
        summary="Register an MCP server",
        description="An MCP server (streamable HTTP transport) whose tools agents can call: Parley lists its "
        "tools, offers those an agent names in `options.tools` to the model, and calls them, each call in its own "
        "session. Text results reach the model as text, structured ones as JSON, and images or other binary "
        "content are kept as the agent's files of the conversation. Nothing is requested of the server here: "
        f"`GET .../mcp-servers/{{id}}/tools` does. {_MCP_SERVER_RULES}\n\nErrors: 400 for an invalid field "
        "(the message names it) or a name already used.",
        request=McpServerInputSerializer,
        responses={201: McpServerSerializer},
        examples=[
            OpenApiExample(
                "A CRM's MCP server",
                value={
                    "name": "crm",
                    "url": "https://mcp.acme.example/mcp",
                    "headers": {"Authorization": "Bearer the-crm-key"},
                },
                request_only=True,
            ),
            _MCP_SERVER_RESPONSE,
        ],
    ),
    retrieve=extend_schema(
        summary="Get an MCP server",
        description="One of the tenant's MCP servers, without its header values.\n\nErrors: 404 for a server "
        "that is not the tenant's.",
        responses=McpServerSerializer,
        examples=[_MCP_SERVER_RESPONSE],
    ),
    partial_update=extend_schema(
        summary="Change an MCP server",
        description=f"Changes the fields given; `headers` given replace them all. {_MCP_SERVER_RULES}\n\n"
        "Errors: 400 for an invalid field or a name already used; 404 for a server that is not the tenant's.",
        request=McpServerInputSerializer(partial=True),
        responses=McpServerSerializer,
        examples=[
            OpenApiExample("A longer timeout", value={"timeout_seconds": 20}, request_only=True),
            _MCP_SERVER_RESPONSE,
        ],
    ),
    destroy=extend_schema(
        summary="Delete an MCP server",
        description="Deletes the server, and answers it as it was: agents that name its tools no longer get "
        "them (their replies go on without them).\n\nErrors: 404 for a server that is not the tenant's.",
        responses={200: McpServerSerializer},
        examples=[_MCP_SERVER_RESPONSE],
    ),
)
class McpServerViewSet(viewsets.GenericViewSet):
    serializer_class = McpServerSerializer
    pagination_class = keyset_pagination("-created_at", "-id")
    lookup_url_kwarg = "server_id"

    def list(self, request, tenant_id):
        page = self.paginate_queryset(mcp_server_list(tenant=request.tenant))
        return self.get_paginated_response(McpServerSerializer(page, many=True).data)

    def create(self, request, tenant_id):
        serializer = McpServerInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        server = mcp_server_create(tenant=request.tenant, data=serializer.validated_data)
        return Response(McpServerSerializer(server).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, tenant_id, server_id):
        return Response(McpServerSerializer(mcp_server_get(tenant=request.tenant, server_id=server_id)).data)

    def partial_update(self, request, tenant_id, server_id):
        server = mcp_server_get(tenant=request.tenant, server_id=server_id)
        serializer = McpServerInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(McpServerSerializer(mcp_server_update(server=server, data=serializer.validated_data)).data)

    def destroy(self, request, tenant_id, server_id):
        server = mcp_server_get(tenant=request.tenant, server_id=server_id)
        body = McpServerSerializer(server).data
        mcp_server_delete(server=server)
        return Response(body)


class McpServerToolsView(AsyncAPIView):
    """Async: the server may take its whole timeout to answer, and no thread waits for it."""

    @extend_schema(
        summary="List an MCP server's tools",
        description="Asks the server for its tools, now, and answers them as agents name them "
        "(`<server>__<tool>`), with the description and argument schema the model gets (a schema that is not "
        'of type object is offered as `{"type": "object"}`). Left out: tools whose names do not fit (letters, '
        "digits, `_` and `-`, 64 in all), whose schema is over 16 KiB, and those past the first 100, the first "
        "10 pages of the listing or 256 KiB of schemas and descriptions. An agent is offered at most 128 tools "
        "in all.\n\nErrors: 404 for a server that is "
        "not the tenant's; 502 `bad_gateway` when the server cannot be reached, refuses, is on an address "
        "the operator does not allow, or does not answer within its timeout (the message says which).",
        responses={200: McpToolSerializer(many=True), 502: ErrorSerializer},
        examples=[
            OpenApiExample(
                "A CRM's tools",
                value=[
                    {
                        "name": "crm__find_customer",
                        "description": "Finds a customer by name or e-mail.",
                        "parameters": {
                            "type": "object",
                            "properties": {"query": {"type": "string"}},
                            "required": ["query"],
                        },
                    }
                ],
                response_only=True,
            )
        ],
    )
    async def get(self, request, tenant_id: str, server_id: str):
        server = await in_worker(mcp_server_get)(tenant=request.tenant, server_id=server_id)
        return Response(McpToolSerializer(await mcp_server_tools(server), many=True).data)
