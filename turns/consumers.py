"""The WebSocket API: one socket of a tenant carries the turns of several conversations.

`ws(s)://HOST/tenants/{tenant_id}/api/v2/ws`, authenticated as REST is (`Authorization: Bearer <key>`).
Frames are JSON objects with a `type` and, from the client, an optional `request_id` that the answer
carries back (README, "WebSocket"):

- client: `message.send` (the body of `POST .../messages` with `agent_id` and `conversation_id`),
  `message.join` (`agent_id`, `conversation_id`, `message_id`, `after`), `message.cancel` (the same ids),
  `conversation.subscribe` and `conversation.unsubscribe` (`agent_id`, `conversation_id`), `ping`;
- server: `ack`, `event` (`id: "<message id>:<seq>"` and `data`, the SSE protocol's objects: a client can
  switch transports and resume exactly), `reconnect`, `pong`, `error` (`status` and the one error shape),
  and the notices of subscribed conversations (core.notify): `message.created`, `message.completed`,
  `conversation.updated`, `conversation.deleted`.

A reply followed here goes on when the socket closes, unless it was sent with `on_disconnect: cancel`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from rest_framework import exceptions
from rest_framework.exceptions import Throttled

from conversations.models import MessageStatus
from conversations.selectors import conversation_aget
from conversations.serializers import MessageSerializer
from core.db import in_worker
from core.drain import draining
from core.errors import Invalid, NotFound, Unavailable, error_answer
from core.notify import conversation_group
from core.tenancy import tenant_scope_enter
from tenants.authentication import ApiPrincipal, principal_for_header, principal_for_ticket
from tenants.models import ApiKey
from tenants.throttles import ApiKeyRateThrottle
from turns.apis import assistant_message_aget, must_reconnect, settled_after_cancel, turn_request_from
from turns.events import is_terminal
from turns.follow import message_events
from turns.runtime import ConversationRef, generation_cancel, generation_cancel_soon, turn_launch
from turns.serializers import MessagePostSerializer

logger = logging.getLogger(__name__)

MAX_FRAME_CHARS = 1_000_000  # a message's content is at most MESSAGE_MAX_CHARS (100,000 by default)
MAX_REQUEST_ID_CHARS = 100
MAX_SUBSCRIPTIONS = 100
RECONNECT_MS = 500
# WebSocket close codes: 4000 + the HTTP status the same refusal has on REST.
CLOSE_UNAUTHENTICATED, CLOSE_NOT_FOUND = 4401, 4404


class ConversationSocket(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        tenant_scope_enter("")  # as an API request: nothing of any tenant's until the key names one
        self.following: dict[str, asyncio.Task] = {}
        self.cancel_on_close: set[str] = set()
        await self.accept()
        tenant_id = self.scope["url_route"]["kwargs"]["tenant_id"]
        try:
            ticket = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("ticket", [""])[0]
            self.principal = await in_worker(_principal)(self._header("authorization"), ticket, tenant_id)
        except Exception as exc:
            status = await self._send_error(exc, None)
            await self.close(code=CLOSE_NOT_FOUND if status == 404 else CLOSE_UNAUTHENTICATED)
            return
        tenant_scope_enter(self.principal.tenant.id)
        self.throttle = ApiKeyRateThrottle()
        self.subscribed: set[str] = set()
        self.key_watch = asyncio.create_task(self._watch_key())

    async def disconnect(self, code: int) -> None:
        if (watch := getattr(self, "key_watch", None)) is not None:
            watch.cancel()
        for message_id, task in list(getattr(self, "following", {}).items()):
            task.cancel()
            if message_id in self.cancel_on_close:
                generation_cancel_soon(message_id)
        for conversation_id in getattr(self, "subscribed", ()):
            await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not hasattr(self, "principal"):
            return  # refused at connect; the socket is closing
        request_id = None
        try:
            if text_data is None or len(text_data) > MAX_FRAME_CHARS:
                raise Invalid(f"A frame is a JSON object in a text frame of at most {MAX_FRAME_CHARS} characters.")
            try:
                frame = json.loads(text_data)
            except ValueError:
                raise Invalid("A frame is a JSON object.") from None
            if not isinstance(frame, dict):
                raise Invalid("A frame is a JSON object.")
            request_id = _request_id(frame)
            await self._throttled()
            handler = _HANDLERS.get(frame.get("type"))
            if handler is None:
                raise Invalid(f"type: one of {', '.join(sorted(_HANDLERS))}.", details={"type": frame.get("type")})
            await handler(self, frame, request_id)
        except Exception as exc:
            await self._send_error(exc, request_id)

    # --- Frames -----------------------------------------------------------------------------------

    async def _ping(self, frame: dict, request_id: str | None) -> None:
        await self._send({"type": "pong", "request_id": request_id})

    async def _send_message(self, frame: dict, request_id: str | None) -> None:
        ref = ConversationRef(
            tenant_id=self.principal.tenant.id,
            agent_id=_id(frame, "agent_id"),
            conversation_id=_id(frame, "conversation_id"),
        )
        body = {key: value for key, value in frame.items() if key not in _ENVELOPE}
        serializer = MessagePostSerializer(data=body)
        serializer.is_valid(raise_exception=True)
        turn_request = turn_request_from(serializer.validated_data)
        if draining():
            raise Unavailable
        plan, _ = await turn_launch(ref=ref, request=turn_request)
        await self._send({
            "type": "ack", "request_id": request_id,
            "message_id": plan.message_id, "user_message_id": plan.user_message_id,
            "conversation_id": plan.conversation_id,
        })  # fmt: skip
        self._follow(plan.message_id, after=-1, cancel_on_close=turn_request.on_disconnect == "cancel")

    async def _join(self, frame: dict, request_id: str | None) -> None:
        message = await self._assistant_message(frame)
        after = frame.get("after", -1)
        if type(after) is not int or after < -1:
            raise Invalid("after: an integer, the seq of the last event received (-1: from the start).")
        await self._send({"type": "ack", "request_id": request_id, "message_id": message.id})
        self._follow(message.id, after=after, cancel_on_close=False)

    async def _cancel(self, frame: dict, request_id: str | None) -> None:
        message = await self._assistant_message(frame)
        if message.status == MessageStatus.IN_PROGRESS:
            await generation_cancel(message.id)
            message = await settled_after_cancel(message)
        body = await sync_to_async(lambda: MessageSerializer(message).data)()
        await self._send({"type": "ack", "request_id": request_id, "message_id": message.id, "message": body})

    async def _subscribe(self, frame: dict, request_id: str | None) -> None:
        conversation = await conversation_aget(
            tenant=self.principal.tenant, agent_id=_id(frame, "agent_id"), conversation_id=_id(frame, "conversation_id")
        )
        if conversation.id not in self.subscribed:
            if len(self.subscribed) >= MAX_SUBSCRIPTIONS:
                raise Invalid(
                    f"A socket follows at most {MAX_SUBSCRIPTIONS} conversations; unsubscribe from one first."
                )
            await self.channel_layer.group_add(conversation_group(conversation.id), self.channel_name)
            self.subscribed.add(conversation.id)
        await self._send({"type": "ack", "request_id": request_id, "conversation_id": conversation.id})

    async def _unsubscribe(self, frame: dict, request_id: str | None) -> None:
        conversation_id = _id(frame, "conversation_id")
        if conversation_id in self.subscribed:
            self.subscribed.discard(conversation_id)
            await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)
        await self._send({"type": "ack", "request_id": request_id, "conversation_id": conversation_id})

    async def conversation_notice(self, notice: dict) -> None:
        """A notice of a subscribed conversation (core.notify), from any process."""
        if notice["conversation_id"] not in self.subscribed:
            return  # (unsubscribed while it travelled)
        if notice["event"] == "conversation.deleted":
            self.subscribed.discard(notice["conversation_id"])
            await self.channel_layer.group_discard(conversation_group(notice["conversation_id"]), self.channel_name)
        await self._send({"type": notice["event"], **{k: v for k, v in notice.items() if k not in ("type", "event")}})

    # --- Following replies ------------------------------------------------------------------------

    def _follow(self, message_id: str, *, after: int, cancel_on_close: bool) -> None:
        """Send the reply's events after `after` from now on (instead of where this socket was)."""
        if (previous := self.following.pop(message_id, None)) is not None:
            previous.cancel()
        if cancel_on_close:
            self.cancel_on_close.add(message_id)
        task = asyncio.create_task(self._events(message_id, after))
        self.following[message_id] = task
        task.add_done_callback(lambda done: self._followed(message_id, done))

    def _followed(self, message_id: str, task: asyncio.Task) -> None:
        if self.following.get(message_id) is task:
            del self.following[message_id]
            self.cancel_on_close.discard(message_id)

    async def _events(self, message_id: str, after: int) -> None:
        finished = False
        async for batch in message_events(message_id, after=after, stop=lambda: must_reconnect(message_id)):
            for seq, event in batch:  # (an empty batch is SSE's keep-alive: the socket has its own pings)
                await self._send(
                    {"type": "event", "id": f"{message_id}:{seq}", "message_id": message_id, "data": event}
                )
            finished = finished or bool(batch) and is_terminal(batch[-1][1])
        if not finished:  # this process stops and the reply goes on: join it again (elsewhere)
            await self._send({"type": "reconnect", "message_id": message_id, "retry_ms": RECONNECT_MS})

    async def _watch_key(self) -> None:
        """Close the socket within WS_KEY_CHECK_SECONDS once its key is revoked or its tenant deactivated."""
        while True:
            await asyncio.sleep(settings.WS_KEY_CHECK_SECONDS)
            try:
                live = await in_worker(_key_live)(self.principal.api_key.pk)
            except DatabaseError:  # the database is away: the socket stays, and the check comes again
                logger.warning("Checking the key of a WebSocket failed", exc_info=True)
                continue
            if not live:
                gone = exceptions.AuthenticationFailed("This API key was revoked, or its tenant deactivated.")
                await self._send_error(gone, None)
                await self.close(code=CLOSE_UNAUTHENTICATED)
                return

    # --- Helpers ----------------------------------------------------------------------------------

    async def _assistant_message(self, frame: dict):
        return await assistant_message_aget(
            self.principal.tenant, _id(frame, "agent_id"), _id(frame, "conversation_id"), _id(frame, "message_id")
        )

    async def _throttled(self) -> None:
        """The REST throttle of the key: each frame counts as one request."""
        request = SimpleNamespace(user=self.principal, auth=self.principal.api_key)
        if not await in_worker(self.throttle.allow_request)(request, None):
            raise Throttled(wait=self.throttle.wait())

    async def _send(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    async def _send_error(self, exc: Exception, request_id: str | None) -> int:
        status, body, _ = error_answer(exc, where=self.scope.get("path", "websocket"))  # (429: details.retry_after)
        await self._send({"type": "error", "request_id": request_id, "status": status, **body})
        return status

    def _header(self, name: str) -> str:
        wanted = name.encode()
        return next((value.decode("latin-1") for key, value in self.scope["headers"] if key == wanted), "")


_ENVELOPE = {"type", "request_id", "agent_id", "conversation_id"}
_HANDLERS = {
    "ping": ConversationSocket._ping,
    "message.send": ConversationSocket._send_message,
    "message.join": ConversationSocket._join,
    "message.cancel": ConversationSocket._cancel,
    "conversation.subscribe": ConversationSocket._subscribe,
    "conversation.unsubscribe": ConversationSocket._unsubscribe,
}


def _principal(header: str, ticket: str, tenant_id: str) -> ApiPrincipal:
    """The principal of the key (`Authorization`) or ticket (`?ticket=`, browsers), if it is a live key of
    this URL's tenant (which must be active)."""
    if header:
        principal = principal_for_header(header, tenant_id)
    elif ticket:
        principal = principal_for_ticket(ticket)
    else:
        raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <API key>', or ?ticket= (POST .../ws-tickets).")
    if principal.tenant.id != tenant_id or not principal.tenant.is_active:
        raise NotFound()
    return principal


def _key_live(api_key_id: int) -> bool:
    return ApiKey.objects.active().filter(pk=api_key_id, tenant__is_active=True).exists()


def _request_id(frame: dict) -> str | None:
    request_id = frame.get("request_id")
    if request_id is None:
        return None
    if not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_CHARS:
        raise Invalid(f"request_id: a string of at most {MAX_REQUEST_ID_CHARS} characters.")
    return request_id


def _id(frame: dict, name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value or len(value) > 100:
        raise Invalid(f"{name}: required, a string.", details={name: value})
    return value
