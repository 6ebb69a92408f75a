"""Any OpenAI-compatible Chat Completions server (OpenAI, Fireworks, DeepSeek, vLLM, Ollama, llama.cpp)
through the official SDK: streamed content, `reasoning_content` as thinking, usage as tokens, and a bounded
tool-calling loop over the tools of agents.tools. Base URL and key come from operator settings only."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
from django.conf import settings

from agents.engines.base import (
    Citations,
    Content,
    EngineFailure,
    Event,
    Finished,
    Thinking,
    ToolCallEnded,
    ToolCallStarted,
    TurnContext,
    Usage,
)
from agents.http_tools import http_tools_for
from agents.mcp_tools import mcp_tools_for
from agents.tools import ToolContext, registry, tool_call
from core.db import in_worker

logger = logging.getLogger(__name__)

CONTINUE_PROMPT = "Continue your previous answer exactly where it stopped, without repeating it."


def model_allowed(model: str) -> bool:
    """Operators choose the models tenants may use (OPENAI_MODELS); the default model is always one."""
    return not settings.OPENAI_MODELS or model in settings.OPENAI_MODELS or model == settings.DEFAULT_MODEL


# Each event loop's clients, by the settings they were made with (tests change them).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, openai.AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)


def openai_client() -> openai.AsyncOpenAI:
    """The client of this event loop for the operator's server, made once and kept: a new one builds an
    HTTP client and a TLS context (about 35 ms of CPU) and opens new connections, for every turn."""
    if not settings.OPENAI_BASE_URL and not settings.OPENAI_API_KEY:
        raise EngineFailure("No OpenAI-compatible engine is configured (set OPENAI_BASE_URL and OPENAI_API_KEY).")
    key = (
        settings.OPENAI_BASE_URL,
        settings.OPENAI_API_KEY,
        settings.OPENAI_TIMEOUT_SECONDS,
        settings.OPENAI_MAX_RETRIES,
    )
    clients = _clients.setdefault(asyncio.get_running_loop(), {})
    if key not in clients:
        clients[key] = openai.AsyncOpenAI(
            base_url=settings.OPENAI_BASE_URL or None,
            api_key=settings.OPENAI_API_KEY or "not-needed",
            timeout=settings.OPENAI_TIMEOUT_SECONDS,
            max_retries=settings.OPENAI_MAX_RETRIES,
        )
    return clients[key]


async def openai_clients_close() -> None:
    """Close this event loop's clients and their connections (at the server's shutdown)."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.close()


async def completion_chunks(body: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed Chat Completion, as dicts, from the bytes of its server-sent events, until
    `[DONE]`; an `error` event or chunk, or a chunk that is not a JSON object, raises EngineFailure.

    The SDK's own stream builds a typed object of every chunk, which was the largest share of a reply's
    CPU (its models are built by reflecting on type annotations, per field and per chunk): a hundred-chunk
    reply cost about 10 ms more than reading the JSON. The request, its retries, its errors and the
    connection stay the SDK's (`with_streaming_response`); only the reading of the body is done here.
    """
    try:
        async for chunk in _chunks(_event_lines(body)):
            yield chunk
    except httpx2.TimeoutException as exc:  # the SDK's own stream said so with APITimeoutError
        raise EngineFailure("The model server timed out.") from exc
    except (httpx2.RequestError, httpx2.StreamError) as exc:
        raise EngineFailure(f"The model server's stream broke: {type(exc).__name__}.") from exc


_LINE_END = re.compile(rb"\r\n|\r|\n")


async def _event_lines(body: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of an event stream, ended by CR, LF or CRLF only: a text's own line breaks (str.splitlines
    also breaks at U+2028, U+2029 and U+0085, which servers send unescaped in JSON strings) cut no event.
    The bytes are split before they are decoded: no byte of a UTF-8 character is a CR or an LF."""
    pending = b""
    async for data in body:
        pending += data
        held = b"\r" if pending.endswith(b"\r") else b""  # maybe the first half of a CRLF
        *lines, pending = _LINE_END.split(pending[: len(pending) - len(held)])
        pending += held
        for line in lines:
            yield line.decode()
    if pending.rstrip(b"\r"):
        yield pending.rstrip(b"\r").decode()


ERROR_MESSAGE_MAX_CHARS = 200


async def _chunks(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    data: list[str] = []
    event = ""
    async for line in lines:
        if line:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            continue
        # A blank line ends an event (a comment or keep-alive has no data).
        payload, data, kind, event = "\n".join(data), [], event, ""
        if not payload:
            continue
        if payload == "[DONE]":
            return
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError(f"a chunk is {type(chunk).__name__}, not an object")
        if kind == "error" or chunk.get("error"):
            raise EngineFailure(_error_text(chunk.get("error", chunk)))
        yield chunk


def _error_text(error: Any) -> str:
    """What the reply says of an error the model server sent: its message, if it has one, cut short; the
    rest (types, codes, what a proxy adds) only in the log."""
    logger.warning("The model server sent an error: %r", error)
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message.strip():
        return "The model server sent an error."
    message = message.strip()
    if len(message) > ERROR_MESSAGE_MAX_CHARS:
        message = message[: ERROR_MESSAGE_MAX_CHARS - 1] + "…"
    return f"The model server sent an error: {message}"


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "The model server timed out."
    if isinstance(exc, openai.RateLimitError):
        return "The model server is rate limiting requests (429)."
    if isinstance(exc, openai.APIStatusError):
        return f"The model server answered {exc.status_code}."
    if isinstance(exc, openai.APIConnectionError):
        return "The model server could not be reached."
    return f"The model server's stream broke: {type(exc).__name__}."


def build_messages(context: TurnContext) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if context.system_prompt:
        messages.append({"role": "system", "content": context.system_prompt})
    messages += [{"role": m.role, "content": m.content} for m in context.history]
    if context.continue_from:
        messages += [
            {"role": "assistant", "content": context.continue_from},
            {"role": "user", "content": CONTINUE_PROMPT},
        ]
    return messages


@dataclasses.dataclass
class _Completion:
    """What one streamed completion said: its text and the tool calls it asked for, by index."""

    text: list[str] = dataclasses.field(default_factory=list)
    calls: dict[int, dict[str, str]] = dataclasses.field(default_factory=dict)
    finish_reason: str = ""  # as the server said: "stop", "length", "tool_calls"...

    def assistant_message(self) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": "".join(self.text) or None,
            "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in self.calls.values()
            ],
        }


# OpenAI's limit on the tools of one request.
TOOLS_PER_REQUEST_MAX = 128


class OpenAIEngine:
    async def run(self, context: TurnContext) -> AsyncIterator[Event]:
        model = context.model or settings.DEFAULT_MODEL
        if not model_allowed(model):  # an agent made before the operator narrowed the list
            raise EngineFailure(f"The model {model!r} is not offered on this server.")
        async for event in self._run(openai_client(), context):
            yield event

    async def _run(self, client: openai.AsyncOpenAI, context: TurnContext) -> AsyncIterator[Event]:
        """Completions until the model answers without calling tools (at most TOOL_ROUNDS_MAX rounds)."""
        tools = dict(registry())
        names = context.options.get("tools", list(tools))  # the builtin ones unless the agent names its own
        if own := [name for name in names if name not in tools]:  # the tenant's HTTP tools and MCP servers'
            tools.update((tool.name, tool) for tool in await in_worker(http_tools_for)(context.tenant_id, own))
            mcp_tools = await mcp_tools_for(context.tenant_id, [name for name in own if name not in tools])
            tools.update((tool.name, tool) for tool in mcp_tools)
            names = [*names, *(tool.name for tool in mcp_tools if tool.name not in names)]  # a server: its tools
        enabled = [tools[name] for name in dict.fromkeys(names) if name in tools]
        if len(enabled) > TOOLS_PER_REQUEST_MAX:  # (servers named whole may list many)
            logger.warning("Agent tools: %d offered, the first %d kept", len(enabled), TOOLS_PER_REQUEST_MAX)
            enabled = enabled[:TOOLS_PER_REQUEST_MAX]
        tool_context = ToolContext(
            tenant_id=context.tenant_id,
            conversation_id=context.conversation_id,
            message_id=context.message_id,
            file_refs=tuple(context.attachments),
        )
        enabled_names = {tool.name for tool in enabled}
        seen_ids: set[str] = set()
        messages = build_messages(context)
        extra: dict[str, Any] = {
            key: context.options[key] for key in ("temperature", "max_tokens") if key in context.options
        }
        if enabled:
            extra["tools"] = [tool.openai_spec() for tool in enabled]
        try:
            for round_number in range(settings.TOOL_ROUNDS_MAX + 1):
                completion = _Completion()
                async for event in self._stream(client, context, messages, extra, completion):
                    yield event
                if not completion.calls:
                    yield Finished("length" if completion.finish_reason == "length" else "stop")
                    return
                if round_number == settings.TOOL_ROUNDS_MAX:
                    raise EngineFailure(f"The model kept calling tools after {settings.TOOL_ROUNDS_MAX} rounds.")
                for call in completion.calls.values():
                    # An id unique within the run (servers that send none, or the same twice, exist; the runtime
                    # keeps ids unique across the runs of a reply), and a name that fits (ToolCall's columns).
                    call["id"] = _unique_id(call["id"][:80] or f"call_{uuid.uuid4().hex[:16]}", seen_ids)
                    call["name"] = call["name"][:100]
                messages.append(completion.assistant_message())
                for call in completion.calls.values():
                    arguments = _arguments(call["arguments"])
                    yield ToolCallStarted(call["id"], call["name"], arguments)
                    tool = tools.get(call["name"]) if call["name"] in enabled_names else None
                    outcome = await tool_call(tool, call["name"], tool_context, arguments)
                    for event in outcome.events:
                        if isinstance(event, Citations) and event.items:
                            # The next call numbers its sources after these: markers stay unique.
                            last = max(item["number"] for item in event.items)
                            tool_context = dataclasses.replace(tool_context, first_citation=last + 1)
                        yield event
                    content = outcome.text if outcome.content is None else outcome.content
                    yield ToolCallEnded(call["id"], outcome.status, content, outcome.content_type)
                    messages.append({"role": "tool", "tool_call_id": call["id"], "content": outcome.text})
        except EngineFailure:
            raise
        except (openai.OpenAIError, ValueError, KeyError, TypeError) as exc:
            logger.warning("OpenAI-compatible engine failed: %r", exc)
            raise EngineFailure(_describe(exc)) from exc

    @staticmethod
    async def _stream(
        client: openai.AsyncOpenAI, context: TurnContext, messages: list, extra: dict, completion: _Completion
    ) -> AsyncIterator[Event]:
        """One streamed completion: its events, and its text and tool calls gathered in `completion`."""
        request = client.chat.completions.with_streaming_response.create(
            model=context.model or settings.DEFAULT_MODEL,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        async with request as response:
            async for chunk in completion_chunks(response.iter_bytes()):
                if usage := chunk.get("usage"):
                    yield Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                if not chunk.get("choices"):
                    continue
                completion.finish_reason = chunk["choices"][0].get("finish_reason") or completion.finish_reason
                delta = chunk["choices"][0].get("delta") or {}
                reasoning = delta.get("reasoning_content")
                if reasoning and context.reasoning:
                    yield Thinking(reasoning)
                if content := delta.get("content"):
                    completion.text.append(content)
                    yield Content(content)
                for call in delta.get("tool_calls") or ():
                    slot = completion.calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                    slot["id"] = call.get("id") or slot["id"]
                    if function := call.get("function"):
                        slot["name"] += function.get("name") or ""
                        slot["arguments"] += function.get("arguments") or ""


def strict_json(text: str) -> Any:
    """json.loads without NaN and Infinity, which JSON has not and PostgreSQL cannot store (ValueError)."""
    return json.loads(text, parse_constant=_not_json)


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _arguments(text: str) -> Any:
    """A call's arguments as the model wrote them: the JSON object, or the text when it is not one."""
    try:
        value = strict_json(text or "{}")
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _unique_id(call_id: str, seen: set[str]) -> str:
    unique, suffix = call_id, 1
    while unique in seen:
        suffix += 1
        unique = f"{call_id}_{suffix}"
    seen.add(unique)
    return unique
