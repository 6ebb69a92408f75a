"""`POST /v1/conversation`: the stateless conversation API, with the request and response shapes of the
seed (`{"success": true, "response": ...}`; errors `{"success": false, "error": ...}`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from agents.engines import EngineFailure, TurnContext
from conversations.stateless import (
    DEFAULT_SYSTEM_PROMPT,
    stateless_answer,
    stateless_context,
    stateless_events,
    stateless_request_parse,
    stateless_wire,
)
from core.db import release_request_thread
from core.errors import EngineError, exception_handler
from core.sse import EventStreamNegotiation, sse_event, sse_response
from core.views import AsyncAPIView
from tenants.models import Tenant
from tenants.permissions import HasActiveTenant


def v1_exception_handler(exc, context):
    """The seed's error shape, with the status and headers the v2 handler chose."""
    response = exception_handler(exc, context)
    response.data = {"success": False, "error": response.data["error"]["message"]}
    return response


V1_ERROR = inline_serializer(
    "V1Error", {"success": serializers.BooleanField(default=False), "error": serializers.CharField()}
)


class V1APIView(EventStreamNegotiation, AsyncAPIView):
    """Base of the /v1 views: the tenant comes from the key; errors are `{"success": false, "error"}`."""

    permission_classes = [HasActiveTenant]
    error_serializer = V1_ERROR  # for the OpenAPI schema

    def get_exception_handler(self):
        return v1_exception_handler


V1_MESSAGE = inline_serializer(
    "V1Message",
    {
        "role": serializers.ChoiceField(choices=["user", "assistant"]),
        "content": serializers.CharField(),
        "files": serializers.ListField(child=serializers.CharField(), required=False, help_text="File refs."),
    },
)
V1_REQUEST = inline_serializer(
    "V1ConversationRequest",
    {
        "messages": serializers.ListField(child=V1_MESSAGE, min_length=1, help_text="The last one from the user."),
        "system_prompt": serializers.CharField(required=False, default=DEFAULT_SYSTEM_PROMPT),
        "stream": serializers.BooleanField(required=False, default=False),
        "agent_id": serializers.CharField(required=False, help_text="Use this agent's engine and model."),
        "reasoning": serializers.BooleanField(required=False, default=False),
    },
)


class ConversationV1View(V1APIView):
    @extend_schema(
        summary="Stateless multi-turn conversation: send the whole history, get the reply",
        request=V1_REQUEST,
        responses={
            200: inline_serializer(
                "V1ConversationResponse", {"success": serializers.BooleanField(), "response": serializers.CharField()}
            ),
            (200, "text/event-stream"): OpenApiResponse(
                response=OpenApiTypes.STR,
                description='With `"stream": true`: `data:` lines `{"thinking"}`, `{"content"}` deltas, '
                '`{"tokens"}`, then `{"done": true}` (or `{"error"}`).',
            ),
            400: V1_ERROR,
            401: V1_ERROR,
            404: V1_ERROR,
            413: V1_ERROR,
            429: V1_ERROR,
            502: V1_ERROR,
        },
    )
    async def post(self, request):
        stateless = stateless_request_parse(request.data)
        engine, context = await sync_to_async(stateless_context)(tenant=request.tenant, request=stateless)
        await release_request_thread()
        if stateless.stream:
            return sse_response(_event_stream(request.tenant, engine, context))
        try:
            text = await stateless_answer(tenant=request.tenant, engine=engine, context=context)
        except EngineFailure as exc:
            raise EngineError(str(exc)) from exc
        return Response({"success": True, "response": text})


async def _event_stream(tenant: Tenant, engine: str, context: TurnContext) -> AsyncIterator[bytes]:
    # Nothing outlives the request here: when the client leaves, closing these generators closes the
    # engine's (and its HTTP stream to the model).
    tokens = [0]
    try:
        async with contextlib.aclosing(stateless_events(tenant=tenant, engine=engine, context=context)) as events:
            async for event in events:
                payload = stateless_wire(event, tokens)
                if payload is not None:
                    yield sse_event(payload)
    except EngineFailure as exc:
        yield sse_event({"error": str(exc) or "The engine failed."})
        return
    yield sse_event({"tokens": tokens[0]})
    yield sse_event({"done": True})
