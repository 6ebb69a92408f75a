"""Server-Sent Events: one JSON object per `data:` line, optional `id:` lines, keep-alive comments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

KEEPALIVE = b": keep-alive\n\n"


def sse_event(data: dict[str, Any], event_id: str | None = None) -> bytes:
    # json.dumps escapes newlines, so an event is always a single data line.
    line = f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
    return (f"id: {event_id}\n{line}" if event_id else line).encode()


def sse_reconnect(retry_ms: int) -> bytes:
    """The end of a stream this server process cannot finish (it is stopping): reconnect in `retry_ms`,
    with `Last-Event-ID` (an EventSource does both by itself). No id: the last one seen stays the one to
    resume from."""
    return f"retry: {retry_ms}\ndata: {json.dumps({'reconnect': {'retry_ms': retry_ms}})}\n\n".encode()


def sse_response(chunks: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """A streaming response from an async iterator (a sync one would be buffered whole under ASGI)."""
    response = StreamingHttpResponse(chunks, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


# What one `data:` line of a stream holds, for the OpenAPI document: an object with one of these keys
# (`done` comes with `status`). OpenAPI has no notation for a stream of events; this is their shape.
StreamEventSerializer = inline_serializer(
    name="StreamEvent",
    fields={
        "message": serializers.DictField(
            required=False, help_text="First: `id`, `user_message_id`, `conversation_id` of the reply."
        ),
        "thinking": serializers.CharField(required=False, help_text="A delta of the reasoning (reasoning on)."),
        "content": serializers.CharField(required=False, help_text="A delta of the reply's text."),
        "citations": serializers.ListField(
            child=serializers.DictField(), required=False, help_text="Sources the text cites by `[number]`."
        ),
        "data_frame": serializers.DictField(required=False, help_text="`name`, `rows`, `columns` of a new frame."),
        "tokens": serializers.IntegerField(required=False, help_text="The reply's tokens, before its end."),
        "done": serializers.BooleanField(required=False, help_text="The end; the stream closes."),
        "status": serializers.ChoiceField(
            choices=["completed", "cancelled"], required=False, help_text="With `done`: how it ended."
        ),
        "error": serializers.CharField(required=False, help_text="The end of a failed reply: why."),
        "reconnect": serializers.DictField(
            required=False,
            help_text="The server process is stopping: reconnect after `retry_ms` with Last-Event-ID.",
        ),
    },
)


class EventStreamRenderer(BaseRenderer):
    """Lets `Accept: text/event-stream` through DRF's content negotiation; streams bypass rendering."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return json.dumps(data).encode()


class EventStreamNegotiation:
    """For DRF views that may answer with Server-Sent Events: clients send `Accept: text/event-stream`,
    and whatever they accept, errors and other answers are rendered as JSON."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response):
            response.accepted_renderer, response.accepted_media_type = JSONRenderer(), "application/json"
        return response
