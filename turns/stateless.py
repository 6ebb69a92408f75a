"""`POST /v1/conversation`: the stateless conversation API. The client sends the whole history each time,
the agent answers, and nothing is stored but the tenant's usage. Request and response shapes are the
seed's: `{"success": true, "response": ...}`, errors `{"success": false, "error": ...}`."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from agents.engines import ChatMessage, Citations, Content, EngineFailure, Event, TurnContext, Usage
from agents.engines.selection import engine_for
from agents.models import Engine
from agents.selectors import agent_get
from core.errors import EngineError, Invalid, PayloadTooLarge
from core.fields import StrictBooleanField, StrictCharField
from core.schema import V1ErrorSerializer
from core.serializers import InputSerializer
from core.sse import StreamEventSerializer, sse_event, sse_response
from core.views import V1APIView
from files.selectors import file_refs_validate, files_as_context
from tenants.models import Tenant
from tenants.services import usage_record
from turns.events import wire_event

logger = logging.getLogger(__name__)
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
MAX_FILE_REFS = 20  # as for a message's attachments in the v2 API


class V1MessageSerializer(InputSerializer):
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = StrictCharField(trim_whitespace=False)
    files = serializers.ListField(
        child=StrictCharField(),
        required=False,
        default=list,
        help_text="File refs of files uploaded with POST /v1/files; at most 20 different ones in all the messages.",
    )

    def validate_content(self, content: str) -> str:
        if not content.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return content


class V1ConversationSerializer(InputSerializer):
    messages = serializers.ListField(
        child=V1MessageSerializer(),
        allow_empty=False,
        min_length=1,
        help_text="The whole history; the last from the user.",
    )
    system_prompt = StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Without it: the agent's own (with `agent_id`), else a generic one.",
    )
    stream = StrictBooleanField(required=False, default=False)
    reasoning = StrictBooleanField(required=False, default=False)
    agent_id = StrictCharField(required=False, help_text="Use this agent's engine and model.")

    def validate_messages(self, messages: list[dict]) -> list[dict]:
        if messages[-1]["role"] != "user":
            raise serializers.ValidationError("The last message must be from the user.")
        if len({ref for message in messages for ref in message["files"]}) > MAX_FILE_REFS:
            raise serializers.ValidationError(f"At most {MAX_FILE_REFS} different files can be attached.")
        return messages


def stateless_request_parse(data) -> dict:
    """The validated body (400 naming the field), or 413 for a history over STATELESS_MAX_BYTES."""
    if isinstance(data, dict):
        size = len(json.dumps(data.get("messages"))) + len(json.dumps(data.get("system_prompt", "")))
        if size > settings.STATELESS_MAX_BYTES:
            raise PayloadTooLarge(
                f"The conversation is {size} bytes; the limit is {settings.STATELESS_MAX_BYTES} bytes.",
                details={"limit": settings.STATELESS_MAX_BYTES, "setting": "STATELESS_MAX_BYTES"},
            )
    serializer = V1ConversationSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def stateless_context(*, tenant: Tenant, request: dict) -> tuple[str, TurnContext]:
    """The engine and the engine's context: the agent's if one is named, else the operator's default
    model when an OpenAI-compatible server is configured, else the builtin engine."""
    engine, model, options, system_prompt = Engine.BUILTIN, "", {}, DEFAULT_SYSTEM_PROMPT
    if request.get("agent_id"):
        agent = agent_get(tenant=tenant, agent_id=request["agent_id"])
        engine, model, options = agent.engine, agent.model, dict(agent.options)
        system_prompt = agent.system_prompt
    elif settings.DEFAULT_MODEL and (settings.OPENAI_BASE_URL or settings.OPENAI_API_KEY):
        engine, model = Engine.OPENAI, settings.DEFAULT_MODEL
    system_prompt = request.get("system_prompt", system_prompt)  # the request's, when it gives one
    file_refs = list(dict.fromkeys(ref for message in request["messages"] for ref in message["files"]))
    if file_refs:
        files = file_refs_validate(tenant_id=tenant.id, conversation_id=None, refs=file_refs, field="files")
        if engine == Engine.OPENAI:  # the builtin engine retrieves from them itself, with citations
            system_prompt += files_as_context(files, max_chars=settings.STATELESS_FILE_CONTEXT_CHARS)
    context = TurnContext(
        tenant_id=tenant.id,
        conversation_id=None,
        message_id=None,
        system_prompt=system_prompt,
        history=[ChatMessage(role=message["role"], content=message["content"]) for message in request["messages"]],
        model=model,
        options=options,
        attachments=file_refs,
        reasoning=request["reasoning"],
        has_indexed_files=False,  # no conversation: only the attached files are searched
    )
    return engine, context


async def stateless_events(
    *, tenant: Tenant, engine: str, context: TurnContext, agent_id: str = ""
) -> AsyncIterator[Event]:
    """The engine's events; usage is recorded (under the agent named, if any) when the reply ends, fully or
    not."""
    input_tokens = output_tokens = 0
    try:
        async with contextlib.aclosing(engine_for(engine).run(context)) as events:
            async for event in events:
                if isinstance(event, Usage):
                    input_tokens += event.input_tokens
                    output_tokens += event.output_tokens
                yield event
    finally:
        try:
            await sync_to_async(usage_record)(
                tenant_id=tenant.id,
                agent_id=agent_id,
                engine=engine,
                model=context.model,
                requests=1,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
        except DatabaseError:  # the answer stands; the count is lost (as for a stored reply's)
            logger.exception("Recording the usage of a stateless request failed")


async def stateless_answer(
    *, tenant: Tenant, engine: str, context: TurnContext, agent_id: str = ""
) -> tuple[str, list[dict]]:
    """The reply's text and the sources it cites by number."""
    parts, citations = [], []
    async for event in stateless_events(tenant=tenant, engine=engine, context=context, agent_id=agent_id):
        if isinstance(event, Content):
            parts.append(event.text)
        elif isinstance(event, Citations):
            citations.extend(event.items)
    return "".join(parts), citations


async def stateless_stream(
    tenant: Tenant, engine: str, context: TurnContext, agent_id: str = ""
) -> AsyncIterator[bytes]:
    """The v2 stream's events without ids; usage is summed and sent once, as `tokens`, before `done`.
    Nothing outlives the request: when the client leaves, closing these generators closes the engine's
    (and its HTTP stream to the model)."""
    tokens = 0
    try:
        running = stateless_events(tenant=tenant, engine=engine, context=context, agent_id=agent_id)
        async with contextlib.aclosing(running) as events:
            async for event in events:
                if isinstance(event, Usage):
                    tokens += event.input_tokens + event.output_tokens
                payload = wire_event(event)
                if payload is not None:
                    yield sse_event(payload)
    except EngineFailure as exc:
        yield sse_event({"error": str(exc) or "The engine failed."})
        return
    yield sse_event({"tokens": tokens})
    yield sse_event({"done": True})


_FILE_REF = "file_01jngay3g0ktrrva35ffrhkr7a"
_V1_REQUEST = {
    "messages": [
        {"role": "user", "content": "What is the total of the March invoices?", "files": [_FILE_REF]},
        {"role": "assistant", "content": "The March invoices total 48,250.00 EUR [1]."},
        {"role": "user", "content": "And without the credit note?"},
    ],
    "agent_id": "agt_01jngadm50r4vdt6e95f73xrq5",
}
_V1_CITATION = {
    "number": 1,
    "source_id": _FILE_REF,
    "source_name": "invoices-2025-03.pdf",
    "url": "",
    "page": 2,
    "snippet": "Credit note CN-2025-007: -1,200.00 EUR",
    "relevance_score": 0.78,
    "quality_score": 0.9,
}
_V1_STREAM = "".join(
    f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
    for event in [
        {"content": "Without the credit note, "},
        {"content": "they total 47,050.00 EUR [1]."},
        {"citations": [_V1_CITATION]},
        {"tokens": 2210},
        {"done": True},
    ]
)


class ConversationV1View(V1APIView):
    @extend_schema(
        summary="Stateless multi-turn conversation: send the whole history, get the reply",
        description="One request, one answer, nothing stored but the tenant's usage: the client sends the "
        "whole history, `messages` (at least one, `user` and `assistant` turns, the last the user's, none "
        "blank), and gets the agent's reply with the sources it cites. With `agent_id`, the agent's engine, "
        "model, options and system prompt answer; without, the operator's default model when one is "
        "configured, else the builtin engine. `system_prompt` replaces the agent's (or the generic one). A "
        "message's `files` are refs of files uploaded with `POST /v1/files`, at most 20 different ones in all: "
        "an LLM engine gets their extracted text (up to 20,000 characters) in its prompt, the builtin engine "
        "searches and cites them. `messages` and `system_prompt` together may take STATELESS_MAX_BYTES as "
        'JSON (1 MiB by default). With `"stream": true` the answer is Server-Sent Events, one JSON object '
        "per `data:` line (no ids: a stream cannot be resumed), and leaving stops the reply. Errors have the "
        'shape `{"success": false, "error": "..."}`.\n\n'
        "Errors: 400 for an invalid body (the message names the field, e.g. `messages[2].role`), a last "
        "message not the user's, more than 20 files or an unknown file ref; 404 for an `agent_id` that is not "
        "the tenant's; 413 for a history over STATELESS_MAX_BYTES; 502 when the engine failed (a stream ends "
        'with `{"error": "..."}` instead).',
        request=V1ConversationSerializer,
        responses={
            200: inline_serializer(
                "V1ConversationResponse",
                {
                    "success": serializers.BooleanField(),
                    "response": serializers.CharField(),
                    "citations": serializers.ListField(
                        child=serializers.DictField(),
                        help_text="The sources the response cites as [number]: number, source_id, source_name, "
                        "page, snippet, relevance_score.",
                    ),
                },
            ),
            (200, "text/event-stream"): OpenApiResponse(
                response=StreamEventSerializer,
                description='With `"stream": true`: `data:` lines `{"thinking"}`, `{"content"}` deltas, '
                '`{"citations"}`, `{"tokens"}`, then `{"done": true}` (or `{"error"}`).',
            ),
            413: V1ErrorSerializer,
            502: V1ErrorSerializer,
        },
        examples=[
            OpenApiExample("A follow-up question with a file", value=_V1_REQUEST, request_only=True),
            OpenApiExample(
                "Streamed, with a system prompt",
                value={
                    "messages": [{"role": "user", "content": "Say hello in French."}],
                    "system_prompt": "You are terse.",
                    "stream": True,
                },
                request_only=True,
            ),
            OpenApiExample(
                "The reply",
                value={
                    "success": True,
                    "response": "Without the credit note, they total 47,050.00 EUR [1].",
                    "citations": [_V1_CITATION],
                },
                response_only=True,
                media_type="application/json",
            ),
            OpenApiExample(
                "The reply streamed",
                value=_V1_STREAM,
                response_only=True,
                media_type="text/event-stream",
                status_codes=[200],
            ),
        ],
    )
    async def post(self, request):
        if not isinstance(request.data, dict):
            raise Invalid("The body must be a JSON object.")
        validated = stateless_request_parse(request.data)
        engine, context = await sync_to_async(stateless_context)(tenant=request.tenant, request=validated)
        agent_id = validated.get("agent_id", "")
        if validated["stream"]:
            return sse_response(stateless_stream(request.tenant, engine, context, agent_id))
        try:
            text, citations = await stateless_answer(
                tenant=request.tenant, engine=engine, context=context, agent_id=agent_id
            )
        except EngineFailure as exc:
            raise EngineError(str(exc)) from exc
        return Response({"success": True, "response": text, "citations": citations})
