"""The WebSocket API: one socket of a tenant carries the turns of several conversations.

`ws(s)://HOST/tenants/{tenant_id}/api/v2/ws`, authenticated as REST is (`Authorization: Bearer <key>`), by
a ticket (`?ticket=`, browsers), or by a staff user's admin session with the page's CSRF token (`?csrf=`,
the admin's playground).
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

What a socket may hold is bounded: frames of MAX_FRAME_CHARS, MAX_SUBSCRIPTIONS conversations and as many
replies followed, each frame counted by the key's rate limit; and what waits to be sent: the server writes
a frame once the socket's buffer is under its mark, so a client that reads slowly slows its own replies,
and one that stops reading for WS_SEND_TIMEOUT_SECONDS is disconnected. A reply goes on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from types import SimpleNamespace
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import DisallowedHost
from rest_framework import exceptions
from rest_framework.exceptions import Throttled

from conversations.models import MessageStatus
from conversations.selectors import conversation_aget
from conversations.serializers import MessageSerializer
from core.asgi import handshake_request
from core.db import in_worker
from core.drain import draining
from core.errors import Forbidden, Invalid, NotFound, Unavailable, error_answer
from core.idempotency import request_fingerprint, run_idempotent
from core.notify import conversation_group
from core.tenancy import scoped_context, tenant_scope_enter
from tenants.authentication import (
    ApiPrincipal,
    principal_for_header,
    principal_for_staff,
    principal_for_ticket,
    principals_refused,
    session_csrf_check,
)
from tenants.throttles import ApiKeyRateThrottle
from turns.apis import assistant_message_aget, must_reconnect, settled_after_cancel, turn_request_from
from turns.events import is_terminal
from turns.follow import message_events
from turns.runtime import ConversationRef, generation_cancel, generation_cancel_soon, turn_begin
from turns.serializers import MessagePostSerializer

logger = logging.getLogger(__name__)

MAX_FRAME_CHARS = 1_000_000  # a message's content is at most MESSAGE_MAX_CHARS (100,000 by default)
MAX_REQUEST_ID_CHARS = 100
MAX_SUBSCRIPTIONS = 100
MAX_FOLLOWED = 100  # replies followed at once (one runs at a time per conversation)
RECONNECT_MS = 500
# A socket refused closes with 4000 + the HTTP status the same refusal has on REST (4401, 4403, 4404; 4500
# and 4503 when the database or the process fails it); a client too slow with 4408.
CLOSE_STATUS_BASE = 4000
CLOSE_TOO_SLOW = 4408


class ConversationSocket(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        tenant_scope_enter("")  # as an API request: nothing of any tenant's until the key names one
        self.following: dict[str, asyncio.Task] = {}
        self.launching: set[asyncio.Task] = set()  # turns waiting for their turn (if_busy enqueue, interrupt)
        self.cancel_on_close: set[str] = set()
        self.closing = False  # once set, nothing more is sent
        await self.accept()
        try:
            self.principal = await in_worker(_principal)(self.scope)
        except Exception as exc:
            status = await self._send_error(exc, None)
            self.closing = True
            await self.close(code=CLOSE_STATUS_BASE + status)
            return
        tenant_scope_enter(self.principal.tenant.id)
        self.throttle = ApiKeyRateThrottle()
        self.subscribed: set[str] = set()
        _open_sockets_watch(self)

    async def disconnect(self, code: int) -> None:
        """The socket closed, or is being closed (refuse, socket_too_slow): its replies and notices stop."""
        _open_sockets.discard(self)
        for task in list(getattr(self, "launching", ())):
            task.cancel()  # (a queued turn stays queued: DELETE .../queue/{id} takes it out)
        for message_id, task in list(getattr(self, "following", {}).items()):
            task.cancel()
            if message_id in self.cancel_on_close:
                generation_cancel_soon(message_id)
        self.following = {}
        subscribed, self.subscribed = getattr(self, "subscribed", set()), set()
        for conversation_id in subscribed:
            await self.channel_layer.group_discard(conversation_group(conversation_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return  # refused, or too slow: the socket is closing
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
            if (fields := _FIELDS.get(frame["type"])) and (unknown := sorted(set(frame) - fields)):
                # As a REST body: a misspelt field is refused, not ignored (message.send's body is checked whole).
                raise Invalid(f"{unknown[0]}: Unknown field.", details={key: ["Unknown field."] for key in unknown})
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
        if len(self.following) >= MAX_FOLLOWED:
            raise Invalid(f"A socket follows at most {MAX_FOLLOWED} replies at once; wait for one to end.")

        async def launch() -> tuple[int, dict]:
            begun, _ = await turn_begin(ref=ref, request=turn_request)  # (a queued turn: once it has started)
            ids = {"message_id": begun.message_id, "user_message_id": begun.user_message_id}
            return 200, {**ids, "conversation_id": ref.conversation_id}

        # As `Idempotency-Key` on REST: a frame sent again with the same key (after a dropped socket) starts
        # nothing and is answered as the first was, its reply followed from its start.
        key = frame.get("idempotency_key")
        if key is not None and not isinstance(key, str):
            raise Invalid("idempotency_key: a string.")

        async def launch_and_follow() -> None:
            try:
                _, launched = await run_idempotent(
                    tenant_id=ref.tenant_id,
                    key=key,
                    fingerprint=request_fingerprint("WS", "message.send", [ref.agent_id, ref.conversation_id, body]),
                    run=launch,
                )
            except Exception as exc:
                await self._send_error(exc, request_id)
                return
            await self._send({"type": "ack", "request_id": request_id, **launched})
            self._follow(launched["message_id"], after=-1, cancel_on_close=turn_request.on_disconnect == "cancel")

        if turn_request.if_busy in (None, "reject"):
            await launch_and_follow()
        else:  # a turn that may wait its turn: the socket goes on with other frames meanwhile
            self.launching.add(task := asyncio.get_running_loop().create_task(launch_and_follow()))
            task.add_done_callback(self.launching.discard)

    async def _join(self, frame: dict, request_id: str | None) -> None:
        message = await self._assistant_message(frame)
        after = frame.get("after", -1)
        if type(after) is not int or after < -1:
            raise Invalid("after: an integer, the seq of the last event received (-1: from the start).")
        if message.id not in self.following and len(self.following) >= MAX_FOLLOWED:
            raise Invalid(f"A socket follows at most {MAX_FOLLOWED} replies at once; wait for one to end.")
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
        if not finished and must_reconnect(message_id):  # the reply goes on: join it again (elsewhere)
            await self._send({"type": "reconnect", "message_id": message_id, "retry_ms": RECONNECT_MS})

    async def refuse(self, exc: Exception) -> None:
        """(_watch_open_sockets) Its key was revoked or its user signed out or lost the playground (401), or
        its tenant was deactivated (404, as its requests now are): stop its replies and notices, say so, and
        close."""
        await self.disconnect(CLOSE_STATUS_BASE + 401)
        status = await self._send_error(exc, None)
        self.closing = True
        await self._close_soon(CLOSE_STATUS_BASE + status)

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
        """Send a frame once the socket's buffer has room (the ASGI server holds it until then); a client
        that takes nothing for WS_SEND_TIMEOUT_SECONDS is disconnected, and what was still to send dropped."""
        if self.closing:
            return
        text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
        timeout = settings.WS_SEND_TIMEOUT_SECONDS
        try:
            async with asyncio.timeout(timeout):
                await self.send(text_data=text)
        except TimeoutError:
            if self.closing:
                return
            self.closing = True
            logger.warning("A frame waited %ss for a WebSocket client to read: it is disconnected", timeout)
            try:  # into the consumer's own loop, which ends there
                await self.channel_layer.send(self.channel_name, {"type": "socket.too_slow"})
            except Exception:  # (the layer's store is away): its replies and notices stop all the same
                logger.warning("Ending a slow WebSocket's consumer failed", exc_info=True)
                await self.disconnect(CLOSE_TOO_SLOW)

    async def socket_too_slow(self, message: dict) -> None:
        """(From _send, through the channel layer into this consumer's own loop.) End the socket: its
        replies and notices stop here; the close frame goes if the buffer takes it within a second."""
        await self.disconnect(CLOSE_TOO_SLOW)
        await self._close_soon(CLOSE_TOO_SLOW)
        raise StopConsumer

    async def _close_soon(self, code: int) -> None:
        """The close frame, if the socket's buffer takes it within a second (else the ASGI server drops
        the connection once the consumer ends, or its keep-alive pings go unanswered)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await self.close(code=code)

    async def _send_error(self, exc: Exception, request_id: str | None) -> int:
        status, body, _ = error_answer(exc, where=self.scope.get("path", "websocket"))  # (429: details.retry_after)
        await self._send({"type": "error", "request_id": request_id, "status": status, **body})
        return status


# --- The open sockets of this process -------------------------------------------------------------------
# Checked together, by one task: every WS_KEY_CHECK_SECONDS one query finds the sockets whose key was revoked
# (or whose user lost the playground, or whose tenant was deactivated), and those close.

_open_sockets: set[ConversationSocket] = set()
_watch: asyncio.Task | None = None
_refusals: set[asyncio.Task] = set()


def _open_sockets_watch(socket: ConversationSocket) -> None:
    global _watch
    _open_sockets.add(socket)
    if _watch is None or _watch.done():
        _watch = asyncio.create_task(_watch_open_sockets(), context=scoped_context(None))


async def _watch_open_sockets() -> None:
    while _open_sockets:
        await asyncio.sleep(settings.WS_KEY_CHECK_SECONDS)
        sockets = list(_open_sockets)
        try:
            refusals = await in_worker(principals_refused)([socket.principal for socket in sockets])
        except Exception:  # (the database is away): the sockets stay, and the check comes again
            logger.warning("Checking the keys of open WebSockets failed", exc_info=True)
            continue
        for socket, refused in zip(sockets, refusals, strict=True):
            if refused is not None and socket in _open_sockets:
                _open_sockets.discard(socket)
                refusal = asyncio.create_task(socket.refuse(refused))  # (each waits for its own client)
                _refusals.add(refusal)
                refusal.add_done_callback(_refused)


def _refused(refusal: asyncio.Task) -> None:
    _refusals.discard(refusal)
    if not refusal.cancelled() and (exc := refusal.exception()) is not None:  # (the client went meanwhile)
        logger.info("Closing a refused WebSocket failed: %r", exc)


_ENVELOPE = {"type", "request_id", "agent_id", "conversation_id", "idempotency_key"}
# The fields of each frame but message.send (whose body MessagePostSerializer checks): the ids any frame may
# carry (a client may send them with each), and its own.
_IDS = {"type", "request_id", "agent_id", "conversation_id"}
_FIELDS = {
    "ping": _IDS,
    "message.join": _IDS | {"message_id", "after"},
    "message.cancel": _IDS | {"message_id"},
    "conversation.subscribe": _IDS,
    "conversation.unsubscribe": _IDS,
}
_HANDLERS = {
    "ping": ConversationSocket._ping,
    "message.send": ConversationSocket._send_message,
    "message.join": ConversationSocket._join,
    "message.cancel": ConversationSocket._cancel,
    "conversation.subscribe": ConversationSocket._subscribe,
    "conversation.unsubscribe": ConversationSocket._unsubscribe,
}


def _principal(scope: dict) -> ApiPrincipal:
    """Who opens the socket: the key of `Authorization` (server clients), the ticket of `?ticket=`
    (browsers), or the admin session of a staff user allowed the playground, with the page's CSRF token
    as `?csrf=`. The key or user must be live and of this URL's tenant, which must be active."""
    tenant_id = scope["url_route"]["kwargs"]["tenant_id"]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    header = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"authorization"), "")
    if header:
        principal = principal_for_header(header, tenant_id)
    elif ticket := query.get("ticket", [""])[0]:
        principal = principal_for_ticket(ticket)
    elif (user := scope.get("user")) is not None and user.is_authenticated:
        try:
            session_csrf_check(handshake_request(scope, csrf_token=query.get("csrf", [""])[0]))
        except DisallowedHost:
            raise Forbidden("This Host is not one of ALLOWED_HOSTS.") from None
        principal = principal_for_staff(user, tenant_id, scope["session"].session_key)
        if principal is None:  # (as on REST: such a session is not signed in to the API)
            raise exceptions.NotAuthenticated("The playground is for active staff users with its permission.")
    else:
        raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <API key>', or ?ticket= (POST .../ws-tickets).")
    if principal.tenant.id != tenant_id or not principal.tenant.is_active:
        raise NotFound()
    return principal


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
