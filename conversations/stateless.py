"""The stateless conversation API (`POST /v1/conversation`): the client sends the whole history each
time, the agent answers, and nothing is stored but the tenant's usage."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from agents.engines import ChatMessage, Content, Event, Thinking, TurnContext, Usage, engine_for
from agents.models import Engine
from agents.selectors import agent_get
from core.errors import Invalid, PayloadTooLarge
from files.selectors import file_refs_validate, files_as_context
from tenants.models import Tenant
from tenants.services import usage_record

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
ROLES = ("user", "assistant")
MAX_FILE_REFS = 20  # as for a message's attachments in the v2 API


@dataclass
class StatelessRequest:
    messages: list[ChatMessage]
    file_refs: list[str]
    system_prompt: str
    stream: bool
    reasoning: bool
    agent_id: str | None


def _fail(message: str) -> None:
    raise Invalid(message)


def stateless_request_parse(data: Any) -> StatelessRequest:
    """Validate the body with messages that say exactly what is wrong (400), or too big (413)."""
    if not isinstance(data, dict):
        _fail("The body must be a JSON object.")
    messages = data.get("messages")
    if messages is None:
        _fail("messages is required.")
    if not isinstance(messages, list) or not messages:
        _fail("messages must be a non-empty list.")
    size = len(json.dumps(messages)) + len(json.dumps(data.get("system_prompt", "")))
    if size > settings.STATELESS_MAX_BYTES:
        raise PayloadTooLarge(
            f"The conversation is {size} bytes; the limit is {settings.STATELESS_MAX_BYTES} bytes.",
            details={"limit": settings.STATELESS_MAX_BYTES, "setting": "STATELESS_MAX_BYTES"},
        )
    history, refs = [], {}
    for position, message in enumerate(messages):
        where = f"messages[{position}]"
        if not isinstance(message, dict):
            _fail(f"{where} must be an object with role and content.")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            _fail(f"{where}.role must be 'user' or 'assistant'.")
        if not isinstance(content, str) or not content.strip():
            _fail(f"{where}.content must be a non-empty string.")
        files = message.get("files", [])
        if not isinstance(files, list) or not all(isinstance(ref, str) for ref in files):
            _fail(f"{where}.files must be a list of file refs.")
        refs.update(dict.fromkeys(files))
        if len(refs) > MAX_FILE_REFS:
            _fail(f"At most {MAX_FILE_REFS} different files can be attached to a conversation.")
        history.append(ChatMessage(role=role, content=content))
    if history[-1].role != "user":
        _fail("The last message must be from the user.")
    system_prompt = data.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
    if not isinstance(system_prompt, str):
        _fail("system_prompt must be a string.")
    for flag in ("stream", "reasoning"):
        if not isinstance(data.get(flag, False), bool):
            _fail(f"{flag} must be true or false.")
    agent_id = data.get("agent_id")
    if agent_id is not None and not isinstance(agent_id, str):
        _fail("agent_id must be a string.")
    return StatelessRequest(
        messages=history,
        file_refs=list(refs),
        system_prompt=system_prompt,
        stream=data.get("stream", False),
        reasoning=data.get("reasoning", False),
        agent_id=agent_id,
    )


def stateless_context(*, tenant: Tenant, request: StatelessRequest) -> tuple[str, TurnContext]:
    """The engine and the engine's context: the agent's if one is named, else the operator's default
    model when an OpenAI-compatible server is configured, else the builtin engine."""
    engine, model, options = Engine.BUILTIN, "", {}
    if request.agent_id:
        agent = agent_get(tenant=tenant, agent_id=request.agent_id)
        engine, model, options = agent.engine, agent.model, dict(agent.options)
    elif settings.DEFAULT_MODEL and (settings.OPENAI_BASE_URL or settings.OPENAI_API_KEY):
        engine, model = Engine.OPENAI, settings.DEFAULT_MODEL
    system_prompt = request.system_prompt
    if request.file_refs:
        files = file_refs_validate(tenant_id=tenant.id, conversation_id=None, refs=request.file_refs, field="files")
        if engine == Engine.OPENAI:  # the builtin engine retrieves from them itself, with citations
            system_prompt += files_as_context(files, max_chars=settings.STATELESS_FILE_CONTEXT_CHARS)
    context = TurnContext(
        tenant_id=tenant.id,
        conversation_id=None,
        message_id=None,
        system_prompt=system_prompt,
        history=request.messages,
        model=model,
        options=options,
        attachments=request.file_refs,
        reasoning=request.reasoning,
        has_indexed_files=False,  # no conversation: only the attached files are searched
    )
    return engine, context


async def stateless_events(*, tenant: Tenant, engine: str, context: TurnContext) -> AsyncIterator[Event]:
    """The engine's events; usage is recorded when the reply ends (fully or not)."""
    usage = [0, 0]
    try:
        async with contextlib.aclosing(engine_for(engine).run(context)) as events:
            async for event in events:
                if isinstance(event, Usage):
                    usage[0] += event.input_tokens
                    usage[1] += event.output_tokens
                yield event
    finally:
        await sync_to_async(usage_record)(
            tenant_id=tenant.id, requests=1, input_tokens=usage[0], output_tokens=usage[1]
        )


async def stateless_answer(*, tenant: Tenant, engine: str, context: TurnContext) -> str:
    parts = []
    async for event in stateless_events(tenant=tenant, engine=engine, context=context):
        if isinstance(event, Content):
            parts.append(event.text)
    return "".join(parts)


def stateless_wire(event: Event, usage_total: list[int]) -> dict[str, Any] | None:
    """The seed's SSE objects: thinking, content; usage is summed and sent once as tokens."""
    if isinstance(event, Thinking):
        return {"thinking": event.text}
    if isinstance(event, Content):
        return {"content": event.text}
    if isinstance(event, Usage):
        usage_total[0] += event.input_tokens + event.output_tokens
    return None
