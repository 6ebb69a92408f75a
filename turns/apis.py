"""Async endpoints of a turn: post-and-wait (and the messages list on the same path), cancel, streams.

They are adrf views: DRF's authentication, tenant permission, throttling and error shape, but async
handlers, so a request waiting tens of seconds for an engine holds no thread.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlencode

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.apis import ASSISTANT_MESSAGE_EXAMPLE, CONVERSATION_EXAMPLE, USER_MESSAGE_EXAMPLE
from conversations.models import Conversation, Message, MessageStatus, Role
from conversations.selectors import conversation_aget, message_get, message_list
from conversations.serializers import MessageSerializer
from core.db import in_worker
from core.drain import draining, handed_over
from core.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable, error_body
from core.idempotency import HEADER as IDEMPOTENCY_HEADER
from core.idempotency import MAX_KEY_LENGTH, request_fingerprint, run_idempotent
from core.pagination import KeysetPagination, keyset_pagination
from core.schema import ErrorSerializer
from core.sse import (
    KEEPALIVE,
    EventStreamNegotiation,
    StreamEventSerializer,
    sse_event,
    sse_reconnect,
    sse_response,
)
from tenants.services import ws_ticket_issue
from turns.events import is_terminal
from turns.follow import message_events
from turns.runtime import (
    ConversationRef,
    TurnRequest,
    generation_cancel,
    generation_cancel_soon,
    generation_runs_here,
    reply_ended,
    turn_begin,
    turn_enqueued,
    turn_launch,
)
from turns.serializers import (
    MessagePostAndWaitSerializer,
    MessagePostSerializer,
    NewTurnResponseSerializer,
    QueuedTurnSerializer,
    TurnResponseSerializer,
)
from turns.services import message_sweep_if_stale

CANCEL_WAIT_SECONDS = 3.0
RECONNECT_MS = 500  # a stream ended by a stopping process: the client comes back this soon
HANDED_OVER = "This server process stopped while the reply was generated; another goes on with it."


def turn_request_from(validated: dict) -> TurnRequest:
    return TurnRequest(
        content=validated.get("content", ""),
        attachments=validated.get("attachments", []),
        parent_id=validated.get("parent_id"),
        regenerate=validated.get("regenerate"),
        continue_=validated.get("continue", False),
        reasoning=validated.get("reasoning", False),
        on_disconnect=validated.get("on_disconnect", "continue"),
        metadata=validated.get("metadata", {}),
        if_busy=validated.get("if_busy"),
        webhook_url=validated.get("webhook_url", ""),
    )


def turn_prepare(request, serializer_class: type[MessagePostSerializer] = MessagePostSerializer) -> TurnRequest:
    """The body of a turn, checked for itself: what it names in the conversation is checked by turn_start."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return turn_request_from(serializer.validated_data)


def _turn_body_read(user_message_id: str, message_id: str) -> tuple[int, dict]:
    """The answer read back: for a continued reply, or an end that could not be stored as the turn knows it."""
    pair = Message.objects.for_display().select_related("conversation").in_bulk([user_message_id, message_id])
    if len(pair) < 2:  # deleted with its conversation while it was generated
        raise NotFound("Conversation not found.")
    user, assistant = pair[user_message_id], pair[message_id]
    return _turn_body(assistant.conversation, user, assistant, TurnResponseSerializer)


def _turn_body(
    conversation: Conversation, user: Message, assistant: Message, serializer: type[TurnResponseSerializer]
) -> tuple[int, dict]:
    """The conversation and the turn's two messages, or 502 when the reply failed."""
    if assistant.status == MessageStatus.FAILED:
        return 502, error_body(
            "engine_error",
            assistant.error or "The agent's engine failed.",
            {"message_id": assistant.id, "conversation_id": conversation.id},
        )
    body = serializer(
        {"conversation": conversation, "messages": [user, assistant], "current_message_id": assistant.id}
    ).data
    return 200, body


async def _post_and_wait(
    ref: ConversationRef, turn_request: TurnRequest, *, launched: asyncio.Future
) -> tuple[int, dict]:
    """Start the turn, tell `launched` its reply's id, and answer once the reply has ended. Runs as its own
    task when an Idempotency-Key is given (it may outlive the request): worker threads."""
    begun, generation = await turn_begin(ref=ref, request=turn_request)
    launched.set_result(begun.message_id)
    if generation is None:  # started from the queue, here or in another process
        await reply_ended(begun.message_id)
        if await Message.objects.filter(pk=begun.message_id, status=MessageStatus.IN_PROGRESS).aexists():
            # Handed over by a stopping process: it goes on elsewhere (as below).
            raise Unavailable(HANDED_OVER, details={"message_id": begun.message_id})
        return await in_worker(_turn_body_read)(begun.user_message_id, begun.message_id)
    plan = begun
    ending = await asyncio.shield(generation)
    if ending.outcome.status == MessageStatus.IN_PROGRESS:  # handed over by the drain: it goes on elsewhere
        # Raised, not returned: an Idempotency-Key is released, not bound to this answer.
        raise Unavailable(HANDED_OVER, details={"message_id": plan.message_id, "conversation_id": plan.conversation_id})
    if plan.rows is not None and ending.completed_at is not None:  # no query, so no thread either
        rows = plan.rows.at_end(ending)
        return _turn_body(rows.conversation, rows.user_message, rows.assistant, NewTurnResponseSerializer)
    return await in_worker(_turn_body_read)(plan.user_message_id, plan.message_id)


async def _start_in_background(ref: ConversationRef, turn_request: TurnRequest) -> tuple[int, dict]:
    """Start the turn and answer 202 with its rows as they started; the generation runs on its own. A turn
    queued (`if_busy: "enqueue"`) is answered as queued, at once."""
    plan, if_busy = None, "enqueue"
    if turn_request.if_busy != "enqueue":
        try:
            plan, _ = await turn_launch(ref=ref, request=turn_request)
        except Conflict as exc:
            if_busy = exc.details.get("if_busy")
            if if_busy not in ("enqueue", "interrupt"):
                raise
    if plan is None:
        queued = await turn_enqueued(ref=ref, request=turn_request, wait=False, interrupt=if_busy == "interrupt")
        return 202, {"queued_turn": QueuedTurnSerializer(queued).data}
    if plan.rows is None:  # a continued reply: read back
        _, body = await in_worker(_turn_body_read)(plan.user_message_id, plan.message_id)
        return 202, body
    user, assistant = copy.copy(plan.rows.user_message), copy.copy(plan.rows.assistant)
    user.cited = user.calls = assistant.cited = assistant.calls = []  # (nothing yet: no query for them)
    turn = {"conversation": plan.rows.conversation, "messages": [user, assistant], "current_message_id": assistant.id}
    return 202, NewTurnResponseSerializer(turn).data


async def _turn_once(
    request,
    agent_id: str,
    conversation_id: str,
    *,
    start: Callable[[ConversationRef, TurnRequest], Awaitable],
    serializer_class: type[MessagePostSerializer] = MessagePostSerializer,
) -> tuple[int, dict, TurnRequest]:
    """Validate a turn's body and start it, at most once per Idempotency-Key. The conversation is read
    when the turn starts, locked (one query for the 404 and the turn)."""
    turn_request = turn_prepare(request, serializer_class)
    if draining():  # (nginx sends it to another process; behind no proxy, the client sends it again)
        raise Unavailable
    ref = ConversationRef(tenant_id=request.tenant.id, agent_id=agent_id, conversation_id=conversation_id)
    status, body = await run_idempotent(
        tenant_id=request.tenant.id,
        key=request.headers.get(IDEMPOTENCY_HEADER),
        fingerprint=request_fingerprint("POST", request.path, request.data),
        run=lambda: start(ref, turn_request),
    )
    return status, body, turn_request


_ID_PARAMS = [
    OpenApiParameter("agent_id", OpenApiTypes.STR, OpenApiParameter.PATH),
    OpenApiParameter("conversation_id", OpenApiTypes.STR, OpenApiParameter.PATH),
]
_IDEMPOTENCY_PARAM = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {"type": "string", "maxLength": MAX_KEY_LENGTH},
    OpenApiParameter.HEADER,
    description="Retries with the same key and body replay the first response instead of running again "
    f"(for {settings.IDEMPOTENCY_TTL_HOURS} hours). At most {MAX_KEY_LENGTH} printable characters.",
)

# What the OpenAPI document shows (ids as core.ids makes them).
_USER, _REPLY = USER_MESSAGE_EXAMPLE, ASSISTANT_MESSAGE_EXAMPLE
_TURN_RESPONSE = OpenApiExample(
    "The question and its reply",
    value={
        "conversation": {**CONVERSATION_EXAMPLE},
        "messages": [_USER, _REPLY],
        "current_message_id": _REPLY["id"],
    },
    response_only=True,
)
_CANCELLED = {
    **_REPLY,
    "content": "The March invoices total",
    "status": "cancelled",
    "finish_reason": "",
    "output_tokens": 5,
    "citations": [],
    "completed_at": "2025-03-04T10:30:02.114259Z",
}
_STREAM_EXAMPLE = "".join(
    f"id: {_REPLY['id']}:{seq}\ndata: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n"
    for seq, event in enumerate(
        [
            {
                "message": {
                    "id": _REPLY["id"],
                    "user_message_id": _USER["id"],
                    "conversation_id": _REPLY["conversation_id"],
                }
            },
            {"content": "The March invoices total "},
            {"content": "48,250.00 EUR [1]."},
            {"citations": _REPLY["citations"]},
            {"tokens": _REPLY["input_tokens"] + _REPLY["output_tokens"]},
            {"done": True, "status": "completed"},
        ]
    )
)
_STREAM_RESPONSE = OpenApiExample(
    "A reply", value=_STREAM_EXAMPLE, response_only=True, media_type="text/event-stream", status_codes=[200]
)


class MessagesView(AsyncAPIView):
    pagination_class = keyset_pagination("created_at", "id")

    @extend_schema(
        summary="List messages (the active branch, oldest first)",
        description="The messages of the conversation's active branch, the path from its first message to "
        "`current_message_id`, oldest first (`order=desc`: newest first); `branch=all` lists every message of "
        "the tree. Each assistant message has its `status` (`in_progress`, `completed`, `cancelled`, "
        "`failed`), its `error` and its citations. A page at a time: `limit` (1 to 100, default 20) and the "
        "`next` cursor of the previous page (with the same `order`).\n\nErrors: 400 for an unknown `order` or "
        "`branch`, a `limit` out of range or a malformed `next` cursor; 404 for a conversation that is not the "
        "tenant's under this agent.",
        parameters=[
            *_ID_PARAMS,
            OpenApiParameter("order", OpenApiTypes.STR, enum=["asc", "desc"], description="desc: newest first."),
            OpenApiParameter("branch", OpenApiTypes.STR, enum=["active", "all"], description="all: every message."),
        ],
        responses=MessageSerializer(many=True),
        examples=[OpenApiExample("A reply", value=_REPLY, response_only=True)],
    )
    async def get(self, request, tenant_id: str, agent_id: str, conversation_id: str):
        conversation = await conversation_aget(
            tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id
        )
        order = request.query_params.get("order", "asc")
        branch = request.query_params.get("branch", "active")
        if order not in ("asc", "desc"):
            raise Invalid("order: must be asc or desc.", details={"order": order})
        if branch not in ("active", "all"):
            raise Invalid("branch: must be active or all.", details={"branch": branch})
        paginator = KeysetPagination(("-created_at", "-id") if order == "desc" else ("created_at", "id"))

        def page() -> list[dict]:
            queryset = message_list(conversation=conversation, branch=branch).for_display()
            return MessageSerializer(paginator.paginate_queryset(queryset, request), many=True).data

        return paginator.get_paginated_response(await sync_to_async(page)())

    @extend_schema(
        summary="Post a message and wait for the agent's reply",
        description="Adds the user's message and answers once the agent's reply has ended, with the "
        "conversation and both messages. The body is a new message (`content`, `attachments` of the "
        "conversation's files, `parent_id` to branch), or `regenerate` (a new reply to an earlier question), "
        "or `continue` (the last reply goes on). The reply does not depend on the connection: a client that "
        "goes away finds it stored later unless `on_disconnect` is `cancel`. With an `Idempotency-Key`, a "
        "retry of the same body answers what the first did. With `background: true` the answer is 202 at once: "
        "the conversation, the question and the reply `in_progress` (follow it with `GET "
        ".../messages/{id}/stream` or read it later); with an Idempotency-Key that makes exactly one turn, "
        "however often it is sent. `content` takes up to MESSAGE_MAX_CHARS "
        f"characters ({settings.MESSAGE_MAX_CHARS:,} on this server) and may not be blank; `attachments` up to "
        "20 `file_ref`s of the conversation's files; a NUL character anywhere in the body is refused.\n\n"
        "Errors: 400 invalid body, attachment or Idempotency-Key; 404 unknown conversation; 409 a reply is "
        "already running in the conversation (`details.message_id` names it), or a request with the same "
        "Idempotency-Key still is; 422 an Idempotency-Key reused with another body; "
        "502 the engine failed (the reply is stored `failed`); 503 this server process is stopping (nginx "
        "sends the request elsewhere; if the reply had started, `details.message_id` names it and another "
        "process finishes it).",
        examples=[
            OpenApiExample("A question", value={"content": "Is the March total paid?"}, request_only=True),
            OpenApiExample("Regenerate a reply", value={"regenerate": _REPLY["id"]}, request_only=True),
            OpenApiExample("Continue the last reply", value={"continue": True}, request_only=True),
            OpenApiExample(
                "Branch from an earlier reply",
                value={"content": "And for February?", "parent_id": _REPLY["id"]},
                request_only=True,
            ),
            OpenApiExample(
                "A question about a file",
                value={"content": "What is the total of the March invoices?", "attachments": [_USER["attachments"][0]]},
                request_only=True,
            ),
            OpenApiExample(
                "In the background", value={"content": "Summarise March.", "background": True}, request_only=True
            ),
            _TURN_RESPONSE,
        ],
        parameters=[*_ID_PARAMS, _IDEMPOTENCY_PARAM],
        request=MessagePostAndWaitSerializer,
        responses={
            200: TurnResponseSerializer,
            202: OpenApiResponse(TurnResponseSerializer, description="`background: true`: the turn started."),
            409: ErrorSerializer,
            422: ErrorSerializer,
            502: ErrorSerializer,
            503: OpenApiResponse(ErrorSerializer, description="This server process is stopping: send it again."),
        },
    )
    async def post(self, request, tenant_id: str, agent_id: str, conversation_id: str):
        launched = asyncio.get_running_loop().create_future()
        # (_turn_once validates `background` before anything starts)
        background = isinstance(request.data, dict) and request.data.get("background") is True
        start = _start_in_background if background else functools.partial(_post_and_wait, launched=launched)
        try:
            status, body, _ = await _turn_once(
                request, agent_id, conversation_id, start=start, serializer_class=MessagePostAndWaitSerializer
            )
        except asyncio.CancelledError:
            # The client went away; the reply goes on unless the body asked otherwise.
            if launched.done() and request.data.get("on_disconnect") == "cancel":
                await generation_cancel(launched.result())
            raise
        return Response(body, status=status)


class MessageCancelView(AsyncAPIView):
    @extend_schema(
        summary="Stop a running generation; the partial reply is kept as `cancelled`",
        description="Stops the reply wherever it runs (any server process) within about a second and answers "
        "the message as stored: `cancelled` with the text streamed so far, or its end if it had already "
        "ended. Cancelling an ended reply changes nothing. No request body.\n\nErrors: 404 for a message that "
        "is not an assistant message of this conversation of the tenant.",
        parameters=[*_ID_PARAMS, OpenApiParameter("message_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        request=None,
        responses=MessageSerializer,
        examples=[OpenApiExample("A cancelled reply", value=_CANCELLED, response_only=True)],
    )
    async def post(self, request, tenant_id: str, agent_id: str, conversation_id: str, message_id: str):
        message = await assistant_message_aget(request.tenant, agent_id, conversation_id, message_id)
        if message.status == MessageStatus.IN_PROGRESS:
            await generation_cancel(message.id)
            message = await settled_after_cancel(message)
        return Response(await sync_to_async(lambda: MessageSerializer(message).data)())


async def assistant_message_aget(tenant, agent_id: str, conversation_id: str, message_id: str) -> Message:
    """The assistant message of the tenant's conversation under that agent; anything else is 404."""
    conversation = await conversation_aget(tenant=tenant, agent_id=agent_id, conversation_id=conversation_id)
    message = await sync_to_async(message_get)(conversation=conversation, message_id=message_id)
    if message.role != Role.ASSISTANT:
        raise NotFound("Message not found.")
    return message


async def settled_after_cancel(message: Message) -> Message:
    """The message once its cancelled generation has stored its end (or, after a few seconds, as it is)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_WAIT_SECONDS
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        message = await Message.objects.for_display().filter(pk=message.pk).afirst()
        if message is None:  # deleted with its conversation meanwhile
            raise NotFound("Message not found.")
        if message.status != MessageStatus.IN_PROGRESS:
            return message
    # Still running: unless its process died (no heartbeat), in which case it is failed now.
    if await sync_to_async(message_sweep_if_stale)(message):
        message = await Message.objects.for_display().aget(pk=message.pk)
    return message


# --- Server-Sent Events ------------------------------------------------------------------------


def must_reconnect(message_id: str) -> bool:
    """Whether a follower of the reply should come back later (elsewhere): this process stops, and a
    stream of a reply running here lasts while it does (until handed over); any other is followed as well
    from another process."""
    return draining() and (handed_over() or not generation_runs_here(message_id))


async def _event_stream(message_id: str, *, after: int, cancel_on_disconnect: bool) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for batch in message_events(message_id, after=after, stop=lambda: must_reconnect(message_id)):
            if not batch:
                yield KEEPALIVE
                continue
            # One write per batch: under load a reader finds several events at once.
            yield b"".join(sse_event(event, f"{message_id}:{seq}") for seq, event in batch)
            finished = finished or is_terminal(batch[-1][1])
        if not finished and must_reconnect(message_id):
            finished = True  # the reply goes on: a client that reconnects follows it elsewhere
            yield sse_reconnect(RECONNECT_MS)
    finally:
        if not finished and cancel_on_disconnect:
            generation_cancel_soon(message_id)


def _resume_point(request, message_id: str) -> int:
    """The seq to resume after, from `Last-Event-ID: <message id>:<seq>` or `?after=<seq>` (-1: all)."""
    last_event_id = request.headers.get("Last-Event-ID")
    after = request.query_params.get("after")
    try:
        if last_event_id:
            event_message, _, seq = last_event_id.rpartition(":")
            if event_message != message_id:
                raise ValueError
            return max(-1, int(seq))
        return -1 if after is None else max(-1, int(after))  # (an empty ?after= is a mistake, not "all")
    except ValueError:
        raise Invalid(
            "Last-Event-ID: must be '<message id>:<seq>' of this message (or ?after=<seq>).",
            details={"last_event_id": last_event_id, "after": after},
        ) from None


class EventStreamView(EventStreamNegotiation, AsyncAPIView):
    pass


_SSE_RESPONSE = OpenApiResponse(
    response=StreamEventSerializer,
    description="Server-Sent Events: `id: <message id>:<seq>` and one JSON object (StreamEvent) per `data:` line: "
    "`message`, `thinking`, `content`, `citations`, `data_frame`, `tokens`, then `done` (or `error`). A "
    'stopping server process ends it with `retry:` and `{"reconnect": {...}}`: resume with Last-Event-ID.',
)


async def _stream_start(ref: ConversationRef, turn_request: TurnRequest) -> tuple[int, dict]:
    begun, _ = await turn_begin(ref=ref, request=turn_request)
    return 200, {"message_id": begun.message_id}


class StreamView(EventStreamView):
    @extend_schema(
        summary="Post a message and stream the reply as Server-Sent Events",
        description="Takes the body of `POST .../messages` and streams the reply: one JSON object per "
        "`data:` line, each with `id: <message id>:<seq>`. In order: `message` (its ids), `thinking` and "
        '`content` deltas, `citations`, `data_frame`, then `tokens` and `{"done": true, "status": ...}`, '
        'or `{"error": "..."}` when the engine failed. The concatenated `content` deltas are the stored '
        "content. Comment lines (`: keep-alive`) come every 15 s. A server process that stops ends the stream "
        'with `retry:` and `{"reconnect": {"retry_ms": 500}}`: resume with `GET .../messages/{id}/stream` '
        "and `Last-Event-ID`. With `on_disconnect: cancel` the reply stops when the client goes away; else it "
        "goes on and is stored.\n\nErrors: 400 invalid body, attachment or Idempotency-Key; 404 unknown "
        "conversation; 409 a reply is already running in the conversation, or a request with the same "
        "Idempotency-Key still is; 422 an Idempotency-Key reused with another body; 503 this server process is "
        "stopping. They come as JSON before the stream starts, as for `POST .../messages`; an engine failure "
        'ends the stream with `{"error": "..."}` instead of a 502.',
        examples=[
            OpenApiExample("A question", value={"content": "Walk me through the reconciliation."}, request_only=True),
            OpenApiExample(
                "A question stopped if the client leaves",
                value={"content": "Summarise the March invoices.", "on_disconnect": "cancel"},
                request_only=True,
            ),
            _STREAM_RESPONSE,
        ],
        parameters=[*_ID_PARAMS, _IDEMPOTENCY_PARAM],
        request=MessagePostSerializer,
        responses={
            (200, "text/event-stream"): _SSE_RESPONSE,
            409: ErrorSerializer,
            422: ErrorSerializer,
            503: OpenApiResponse(ErrorSerializer, description="This server process is stopping: send it again."),
        },
    )
    async def post(self, request, tenant_id: str, agent_id: str, conversation_id: str):
        status, body, turn_request = await _turn_once(request, agent_id, conversation_id, start=_stream_start)
        if status != 200:
            return Response(body, status=status)
        return sse_response(
            _event_stream(body["message_id"], after=-1, cancel_on_disconnect=turn_request.on_disconnect == "cancel")
        )


class MessageStreamView(EventStreamView):
    @extend_schema(
        summary="Join or resume the stream of an assistant message, running or finished",
        description="The reply's events after `Last-Event-ID` (or `?after=<seq>`; from its start without "
        "either), from any server process, then live until its end: no event is lost or repeated, while it "
        "runs or after. A finished reply's stream is rebuilt exactly from the stored message. Leaving does not "
        "stop the reply.\n\nErrors: 400 for a `Last-Event-ID` that is not `<message id>:<seq>` of this message, "
        "or an `after` that is not an integer; 404 for a message that is not an assistant message of this "
        "conversation of the tenant.",
        parameters=[
            *_ID_PARAMS,
            OpenApiParameter("message_id", OpenApiTypes.STR, OpenApiParameter.PATH),
            OpenApiParameter("after", OpenApiTypes.INT, description="Send the events after this seq."),
            OpenApiParameter(
                "Last-Event-ID", OpenApiTypes.STR, OpenApiParameter.HEADER, description="`<message id>:<seq>`"
            ),
        ],
        responses={(200, "text/event-stream"): _SSE_RESPONSE},
        examples=[_STREAM_RESPONSE],
    )
    async def get(self, request, tenant_id: str, agent_id: str, conversation_id: str, message_id: str):
        message = await assistant_message_aget(request.tenant, agent_id, conversation_id, message_id)
        after = _resume_point(request, message.id)
        return sse_response(_event_stream(message.id, after=after, cancel_on_disconnect=False))


# --- WebSocket tickets ---------------------------------------------------------------------------


class WsTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(
        help_text="Pass as `?ticket=` on the WebSocket handshake: once, before `expires_at` (WS_TICKET_SECONDS)."
    )
    expires_at = serializers.DateTimeField()
    url = serializers.CharField(help_text="The tenant's WebSocket URL with the ticket, ready to open.")


class WsTicketView(APIView):
    @extend_schema(
        summary="Get a ticket to open the WebSocket from a browser",
        description="A browser cannot send `Authorization` on a WebSocket handshake, and an API key must never "
        "be in a URL: a request with the key gets a ticket instead, which the page passes as `?ticket=` on "
        "`ws(s)://HOST/tenants/{tenant_id}/api/v2/ws`. A ticket opens one socket, within "
        f"{settings.WS_TICKET_SECONDS:g} seconds (WS_TICKET_SECONDS); the socket "
        "then acts with the key's rights, and closes within seconds if the key is revoked. README, "
        '"WebSocket", describes the protocol. No request body.\n\nErrors: only the generic ones.',
        request=None,
        responses={201: WsTicketSerializer},
        examples=[
            OpenApiExample(
                "A ticket",
                value={
                    "ticket": "c8Vt2ZQ0yZbqHkq3m1fV5m2Y4jH7nA9wPz0sLrE6uTk",
                    "expires_at": "2025-03-04T10:31:00.000000Z",
                    "url": "wss://parley.example.com/tenants/acme/api/v2/ws?ticket=c8Vt2ZQ0yZbqHkq3m1fV5m2Y4jH7nA9wPz0sLrE6uTk",
                },
                response_only=True,
            )
        ],
    )
    def post(self, request, tenant_id: str):
        if request.auth is None:  # a staff session (the playground) opens its socket with the session itself
            raise Forbidden("Tickets are issued to API keys.")
        ticket, expires_at = ws_ticket_issue(api_key=request.auth)
        url = request.build_absolute_uri(f"/tenants/{tenant_id}/api/v2/ws")  # (routed by config.asgi)
        url = "ws" + url.removeprefix("http") + "?" + urlencode({"ticket": ticket})
        body = {"ticket": ticket, "expires_at": expires_at, "url": url}
        return Response(WsTicketSerializer(body).data, status=201)
