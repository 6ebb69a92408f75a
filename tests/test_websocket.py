"""The WebSocket API through a real server process and a real client (the `websockets` package): send and
stream, resume after a dropped socket with nothing lost or repeated, cancel, a second send is 409, errors
in the one shape, and another tenant's ids are not_found."""

import asyncio
import json
import os
import socket
import sys
import time

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async

from conversations.models import Message, MessageStatus
from tenants.models import Tenant
from tenants.services import api_key_create
from tests.conftest import await_until, uninterrupted_text
from tests.servers import BASE_DIR, served, served_process

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QUESTION = "Tell me about the March invoices and their totals."


@pytest.fixture(scope="module")
def server(django_db_blocker):
    with django_db_blocker.unblock(), served(REDIS_URL="") as base:
        yield base.replace("http://", "ws://")


def socket_url(server: str, ctx) -> str:
    return f"{server}/tenants/{ctx.tenant.id}/api/v2/ws"


def connect(server: str, ctx, **kwargs):
    return websockets.connect(
        socket_url(server, ctx), additional_headers={"Authorization": f"Bearer {ctx.secret}"}, **kwargs
    )


async def frames_until(socket, predicate, *, timeout: float = 15) -> list[dict]:
    """The frames received until one satisfies `predicate` (included); fails after `timeout` seconds."""
    received = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await socket.recv())
            received.append(frame)
            if predicate(frame):
                return received


def is_done(frame: dict) -> bool:
    return frame["type"] == "event" and ("done" in frame["data"] or "error" in frame["data"])


def content_of(frames: list[dict]) -> str:
    return "".join(f["data"].get("content", "") for f in frames if f["type"] == "event")


def send_frame(ctx, conversation, request_id="r1", **body) -> str:
    return json.dumps({
        "type": "message.send", "request_id": request_id,
        "agent_id": ctx.agent.id, "conversation_id": conversation.id, "content": QUESTION, **body,
    })  # fmt: skip


async def test_a_message_sent_streams_its_reply_as_the_sse_protocol_does(server, owner):
    conversation = await sync_to_async(owner.conversation)()
    async with connect(server, owner) as socket:
        await socket.send(json.dumps({"type": "ping", "request_id": "p"}))
        assert json.loads(await socket.recv()) == {"type": "pong", "request_id": "p"}
        await socket.send(send_frame(owner, conversation))
        frames = await frames_until(socket, is_done)
    ack, events = frames[0], frames[1:]
    assert ack["type"] == "ack" and ack["request_id"] == "r1" and ack["conversation_id"] == conversation.id
    message_id = ack["message_id"]
    assert [f["id"] for f in events] == [f"{message_id}:{seq}" for seq in range(len(events))]
    assert events[0]["data"]["message"]["id"] == message_id
    assert events[-1]["data"] == {"done": True, "status": "completed"}
    stored = await Message.objects.aget(id=message_id)
    assert content_of(events) == stored.content == uninterrupted_text(QUESTION)
    assert stored.status == MessageStatus.COMPLETED


async def test_a_dropped_socket_resumes_where_it_was_with_nothing_lost_or_repeated(server, slow_agent):
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    async with connect(server, owner) as socket:
        await socket.send(send_frame(owner, conversation))
        first = await frames_until(socket, lambda f: f["type"] == "event" and "content" in f["data"])
    message_id, last_seq = first[0]["message_id"], int(first[-1]["id"].rsplit(":", 1)[1])
    # The reply went on without a socket; a new one joins after the last event received.
    async with connect(server, owner) as socket:
        await socket.send(json.dumps({
            "type": "message.join", "request_id": "j", "agent_id": owner.agent.id,
            "conversation_id": conversation.id, "message_id": message_id, "after": last_seq,
        }))  # fmt: skip
        rest = await frames_until(socket, is_done)
    assert rest[0] == {"type": "ack", "request_id": "j", "message_id": message_id}
    seqs = [int(f["id"].rsplit(":", 1)[1]) for f in first[1:] + rest[1:]]
    assert seqs == list(range(len(seqs)))
    stored = await Message.objects.aget(id=message_id)
    assert content_of(first + rest) == stored.content == uninterrupted_text(QUESTION)


async def test_cancel_stops_the_reply_and_a_second_send_meanwhile_is_409(server, slow_agent):
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    async with connect(server, owner) as socket:
        await socket.send(send_frame(owner, conversation))
        ack = (await frames_until(socket, lambda f: f["type"] == "ack"))[-1]
        await socket.send(send_frame(owner, conversation, request_id="r2", content="another"))
        refusal = (await frames_until(socket, lambda f: f["type"] == "error"))[-1]
        assert refusal["request_id"] == "r2" and refusal["status"] == 409
        assert refusal["error"]["code"] == "conflict"
        assert refusal["error"]["details"]["message_id"] == ack["message_id"]
        await socket.send(json.dumps({
            "type": "message.cancel", "request_id": "c", "agent_id": owner.agent.id,
            "conversation_id": conversation.id, "message_id": ack["message_id"],
        }))  # fmt: skip
        frames = await frames_until(socket, lambda f: f["type"] == "ack" and f["request_id"] == "c")
    cancelled = frames[-1]["message"]
    assert cancelled["status"] == "cancelled"
    assert [f for f in frames if is_done(f)][-1]["data"]["status"] == "cancelled"
    stored = await Message.objects.aget(id=ack["message_id"])
    assert stored.status == MessageStatus.CANCELLED and stored.content == cancelled["content"]


async def test_bad_frames_are_errors_in_the_one_shape_and_the_socket_stays_open(server, owner):
    conversation = await sync_to_async(owner.conversation)()
    async with connect(server, owner) as socket:
        for raw, status, code in [
            ("not json", 400, "invalid"),
            ("[1, 2]", 400, "invalid"),
            (json.dumps({"type": "message.fly"}), 400, "invalid"),
            (send_frame(owner, conversation, content=""), 400, "invalid"),
            (send_frame(owner, conversation, attachments=["file_nope"]), 400, "invalid"),
            (json.dumps({"type": "message.send", "request_id": "x", "agent_id": owner.agent.id}), 400, "invalid"),
            (json.dumps({"type": "ping", "request_id": 7}), 400, "invalid"),
        ]:
            await socket.send(raw)
            frame = json.loads(await socket.recv())
            assert (frame["type"], frame["status"], frame["error"]["code"]) == ("error", status, code), raw
            assert set(frame["error"]) == {"code", "message", "details"}
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv()) == {"type": "pong", "request_id": None}
    assert not await Message.objects.filter(conversation=conversation).aexists()


async def test_another_tenants_ids_are_not_found_and_its_socket_is_refused(server, owner, outsider):
    conversation = await sync_to_async(owner.conversation)()
    reply = await Message.objects.acreate(
        tenant=owner.tenant, conversation=conversation, role="assistant", content="secret", status="completed"
    )
    ids = {"agent_id": owner.agent.id, "conversation_id": conversation.id, "message_id": reply.id}
    async with connect(server, outsider) as socket:
        for frame in [
            {"type": "message.send", "content": "hi", "agent_id": owner.agent.id, "conversation_id": conversation.id},
            {"type": "message.join", **ids},
            {"type": "message.cancel", **ids},
        ]:
            await socket.send(json.dumps(frame))
            answer = json.loads(await socket.recv())
            assert (answer["status"], answer["error"]["code"]) == (404, "not_found"), frame
            assert "secret" not in json.dumps(answer)
    # The outsider's key on the owner's socket URL, and no key at all, are refused with a close code.
    for headers, close_code, status in [
        ({"Authorization": f"Bearer {outsider.secret}"}, 4404, 404),
        ({}, 4401, 401),
        ({"Authorization": "Bearer prl_00000000_nope"}, 4401, 401),
    ]:
        async with websockets.connect(socket_url(server, owner), additional_headers=headers) as socket:
            frame = json.loads(await socket.recv())
            assert frame["type"] == "error" and frame["status"] == status
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd.code == close_code
    assert await Message.objects.filter(conversation=conversation).acount() == 1


async def test_a_browser_page_of_another_origin_is_refused(server, owner):
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(server, owner, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    async with connect(server, owner, origin="http://127.0.0.1") as socket:
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv())["type"] == "pong"


async def test_the_readmes_client_prints_the_reply(server, owner):
    readme = (BASE_DIR / "README.md").read_text()
    section = readme[readme.index("### WebSocket") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")].replace("ws://127.0.0.1:8000/tenants/demo", f"{server}/tenants/{owner.tenant.id}")
    conversation = await sync_to_async(owner.conversation)()
    environment = {**os.environ, "KEY": owner.secret, "AID": owner.agent.id, "CID": conversation.id}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode() == uninterrupted_text("Hello!")


def notice(frame: dict) -> tuple:
    return (frame["type"], frame.get("role"), frame.get("status"), frame.get("name"))


async def test_a_subscribed_socket_hears_what_another_process_does_over_rest(owner, django_db_blocker):
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("two processes share their notices through Redis: needs REDIS_URL (set by .ci/run)")
    conversation = await sync_to_async(owner.conversation)()
    with django_db_blocker.unblock(), served(REDIS_URL=redis_url) as one, served(REDIS_URL=redis_url) as other:
        async with connect(one.replace("http://", "ws://"), owner) as socket:
            await socket.send(json.dumps({
                "type": "conversation.subscribe", "request_id": "s",
                "agent_id": owner.agent.id, "conversation_id": conversation.id,
            }))  # fmt: skip
            assert json.loads(await socket.recv()) == {
                "type": "ack",
                "request_id": "s",
                "conversation_id": conversation.id,
            }
            url = f"{other}{owner.conversation_url(conversation)}"
            headers = {"Authorization": f"Bearer {owner.secret}"}
            async with httpx.AsyncClient(headers=headers, timeout=30) as client:
                posted = await client.post(f"{url}/messages", json={"content": QUESTION})
                assert posted.status_code == 200, posted.text
                user_message, reply = posted.json()["messages"]
                frames = await frames_until(socket, lambda f: f["type"] == "message.completed")
                assert [notice(f) for f in frames] == [
                    ("message.created", "user", None, None),
                    ("message.created", "assistant", None, None),
                    ("message.completed", None, "completed", None),
                ]
                assert [f["message_id"] for f in frames] == [user_message["id"], reply["id"], reply["id"]]
                assert frames[1]["parent_id"] == user_message["id"]
                assert (await client.patch(url, json={"name": "Renamed"})).status_code == 200
                frames = await frames_until(socket, lambda f: f["type"] == "conversation.updated")
                assert frames[-1] == {
                    "type": "conversation.updated",
                    "conversation_id": conversation.id,
                    "name": "Renamed",
                }
                assert (await client.delete(url)).status_code == 200
                frames = await frames_until(socket, lambda f: f["type"] == "conversation.deleted")
                assert frames[-1] == {"type": "conversation.deleted", "conversation_id": conversation.id}


async def test_a_browser_opens_the_socket_with_a_single_use_ticket(server, owner, outsider):
    http = server.replace("ws://", "http://")
    async with httpx.AsyncClient(base_url=http) as client:
        response = await client.post(f"{owner.base}/ws-tickets", headers={"Authorization": f"Bearer {owner.secret}"})
        assert response.status_code == 201, response.text
        ticket = response.json()
        other = await client.post(f"{outsider.base}/ws-tickets", headers={"Authorization": f"Bearer {outsider.secret}"})
    assert ticket["url"] == f"{socket_url(server, owner)}?ticket={ticket['ticket']}"
    assert owner.secret not in ticket["url"]  # the key is never in a URL
    async with websockets.connect(ticket["url"], origin="http://127.0.0.1") as socket:
        await socket.send(json.dumps({"type": "ping"}))
        assert json.loads(await socket.recv())["type"] == "pong"
    # Spent: a second handshake with it is refused (4401); another tenant's ticket on this URL is 4404.
    for url, status, close_code in [
        (ticket["url"], 401, 4401),
        (f"{socket_url(server, owner)}?ticket={other.json()['ticket']}", 404, 4404),
    ]:
        async with websockets.connect(url) as socket:
            assert json.loads(await socket.recv())["status"] == status
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
            assert closed.value.rcvd.code == close_code


async def test_a_ticket_expires_and_a_revoked_key_closes_its_sockets(owner, django_db_blocker):
    environment = {"REDIS_URL": "", "WS_KEY_CHECK_SECONDS": "0.5", "WS_TICKET_SECONDS": "1"}
    with django_db_blocker.unblock(), served(**environment) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {owner.secret}"}) as client:
            issued_at = time.monotonic()
            expired = (await client.post(f"{owner.base}/ws-tickets")).json()["url"]
        await asyncio.sleep(max(0.0, issued_at + 1.5 - time.monotonic()))  # the ticket's lifetime passes
        async with websockets.connect(expired) as socket:
            assert json.loads(await socket.recv())["status"] == 401
        async with connect(base.replace("http://", "ws://"), owner) as socket:
            await socket.send(json.dumps({"type": "ping"}))
            assert json.loads(await socket.recv())["type"] == "pong"
            await sync_to_async(owner.key.revoke)()
            async with asyncio.timeout(5):
                frame = json.loads(await socket.recv())
                assert (frame["type"], frame["status"]) == ("error", 401)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await socket.recv()
            assert closed.value.rcvd.code == 4401
        # A tenant deactivated: its sockets close as its requests now answer, 404.
        _, secret = await sync_to_async(api_key_create)(tenant=owner.tenant, name="second")
        url = socket_url(base.replace("http://", "ws://"), owner)
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {secret}"}) as socket:
            await socket.send(json.dumps({"type": "ping"}))
            assert json.loads(await socket.recv())["type"] == "pong"
            await Tenant.objects.filter(pk=owner.tenant.pk).aupdate(is_active=False)
            async with asyncio.timeout(5):
                frame = json.loads(await socket.recv())
                assert (frame["type"], frame["status"], frame["error"]["code"]) == ("error", 404, "not_found")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await socket.recv()
            assert closed.value.rcvd.code == 4404


async def test_a_client_that_stops_reading_is_disconnected_and_what_waited_for_it_dropped(owner, django_db_blocker):
    """The server writes a frame once the socket's buffer has room; when one waits WS_SEND_TIMEOUT_SECONDS
    (the client takes nothing), the client is disconnected, so what waits for it never grows."""
    conversation = await sync_to_async(owner.conversation)()
    size, replies = 1_000_000, []
    for _ in range(12):  # 12 MB of stored replies to join, far more than the buffers on the way hold
        replies.append(await Message.objects.acreate(
            tenant=owner.tenant, conversation=conversation, role="assistant", status="completed",
            content="x" * size, stream_index=[[0, "content", 0, size], [1, "done", 0, 0]],
            extra_events=[{"done": True, "status": "completed"}],
        ))  # fmt: skip
    with django_db_blocker.unblock(), served_process(REDIS_URL="", WS_SEND_TIMEOUT_SECONDS="1") as server:
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's buffer fills
        reader.connect(("127.0.0.1", server.port))
        async with websockets.connect(
            socket_url(server.url.replace("http://", "ws://"), owner), sock=reader, max_queue=1, max_size=None,
            compression=None,  # (deflate would make these frames tiny on the wire)
            additional_headers={"Authorization": f"Bearer {owner.secret}"},
        ) as client:  # fmt: skip
            for reply in replies:  # the client sends, and reads nothing for now
                await client.send(json.dumps({
                    "type": "message.join", "agent_id": owner.agent.id, "conversation_id": conversation.id,
                    "message_id": reply.id,
                }))  # fmt: skip
            try:
                await await_until(lambda: "it is disconnected" in server.log_tail(), timeout=15)
            except pytest.fail.Exception:
                pytest.fail(f"the server did not give up on the client; its log: {server.log_tail()}")
            received = 0
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(15):
                    while True:  # what the buffers held, then the end
                        received += len(await client.recv())
    # What the buffers on the way held (a few frames), not the rest: the server dropped it.
    assert received <= len(replies) * size * 2 / 3, received
    assert "Exception" not in server.log_tail()


async def test_a_send_repeated_with_its_idempotency_key_starts_nothing_and_is_answered_as_the_first(server, owner):
    conversation = await sync_to_async(owner.conversation)()
    frame = json.loads(send_frame(owner, conversation, idempotency_key="send-1"))
    async with connect(server, owner) as socket:
        await socket.send(json.dumps(frame))
        first = await frames_until(socket, is_done)
    async with connect(server, owner) as socket:  # as after a dropped socket: the same frame again
        await socket.send(json.dumps({**frame, "request_id": "again"}))
        again = await frames_until(socket, is_done)
        await socket.send(json.dumps({**frame, "request_id": "other", "content": "Another question"}))
        refused = await frames_until(socket, lambda f: f["type"] == "error")
    assert again[0] == {**first[0], "request_id": "again"}  # the same ids
    assert [f["id"] for f in again[1:]] == [f["id"] for f in first[1:]]  # the reply again, from its start
    assert content_of(again) == content_of(first)
    assert (refused[-1]["status"], refused[-1]["error"]["code"]) == (422, "idempotency_key_reused")
    assert await Message.objects.filter(conversation=conversation).acount() == 2  # one question, one reply


async def test_a_frame_with_a_field_it_does_not_take_is_refused_naming_it(server, owner):
    """As a REST body: a misspelt field is a 400 naming it, not silently ignored."""
    conversation = await sync_to_async(owner.conversation)()
    ids = {"agent_id": owner.agent.id, "conversation_id": conversation.id}
    async with connect(server, owner) as socket:
        for frame in [
            {"type": "ping", "request_id": "p", **ids},  # (ids on any frame are fine)
            {"type": "conversation.subscribe", "request_id": "s", "conversation_id": conversation.id, "aftr": 3},
            {"type": "message.join", "request_id": "j", **ids, "message_id": "msg_x", "after": 0, "since": 1},
            {"type": "message.send", "request_id": "m", **ids, "content": "hi", "reasonning": True},
        ]:
            await socket.send(json.dumps(frame))
            answer = json.loads(await socket.recv())
            if frame["type"] == "ping":
                assert answer == {"type": "pong", "request_id": "p"}
                continue
            unknown = {"conversation.subscribe": "aftr", "message.join": "since", "message.send": "reasonning"}
            assert (answer["type"], answer["status"], answer["request_id"]) == ("error", 400, frame["request_id"])
            assert answer["error"]["message"] == f"{unknown[frame['type']]}: Unknown field.", answer
    assert await Message.objects.filter(conversation=conversation).acount() == 0
