"""Concurrency, idempotency and crash recovery of turns, through real concurrent ASGI requests."""

import asyncio
import io
import itertools
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from agents.engines import ChatMessage, Content, TurnContext
from agents.engines.builtin import BuiltinEngine
from agents.models import Agent
from conversations.models import Conversation, Message, MessageStatus, TitleSource
from core.errors import NotFound
from tests.conftest import async_client, await_until, reply_in_progress
from turns import progress, runtime
from turns.events import StreamRecord
from turns.services import SWEPT_SEQ_SKIP

pytestmark = pytest.mark.django_db(transaction=True)


async def apost(client, url, body, **headers):
    return await client.post(url, body, content_type="application/json", headers=headers)


async def test_two_concurrent_posts_one_runs_the_other_gets_409(slow_agent):
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    url = f"{owner.conversation_url(conversation)}/messages"
    client = async_client(owner)
    first, second = await asyncio.gather(apost(client, url, {"content": "one"}), apost(client, url, {"content": "two"}))
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409]
    winner, loser = (first, second) if first.status_code == 200 else (second, first)
    error = loser.json()["error"]
    assert error["code"] == "conflict"
    assert error["details"]["message_id"] == winner.json()["current_message_id"]
    assert await Message.objects.filter(conversation=conversation).acount() == 2

    after = await apost(client, url, {"content": "three"})
    assert after.status_code == 200
    assert await Message.objects.filter(conversation=conversation).acount() == 4


async def test_fifty_concurrent_posts_with_one_idempotency_key_run_one_turn(owner):
    conversation = await sync_to_async(owner.conversation)()
    url = f"{owner.conversation_url(conversation)}/messages"
    client = async_client(owner)
    responses = await asyncio.gather(
        *[apost(client, url, {"content": "pay once"}, **{"Idempotency-Key": "abc-123"}) for _ in range(50)]
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert await Message.objects.filter(conversation=conversation).acount() == 2


async def test_an_idempotency_key_with_another_body_is_422(owner):
    conversation = await sync_to_async(owner.conversation)()
    url = f"{owner.conversation_url(conversation)}/messages"
    client = async_client(owner)
    first = await apost(client, url, {"content": "one"}, **{"Idempotency-Key": "k1"})
    replay = await apost(client, url, {"content": "one"}, **{"Idempotency-Key": "k1"})
    assert first.status_code == replay.status_code == 200
    assert first.content == replay.content
    other = await apost(client, url, {"content": "two"}, **{"Idempotency-Key": "k1"})
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await Message.objects.filter(conversation=conversation).acount() == 2


async def test_idempotency_keys_are_scoped_per_tenant(owner, outsider):
    mine = await sync_to_async(owner.conversation)()
    theirs = await sync_to_async(outsider.conversation)()
    body = {"content": "same"}
    a = await apost(async_client(owner), f"{owner.conversation_url(mine)}/messages", body, **{"Idempotency-Key": "k"})
    b = await apost(
        async_client(outsider), f"{outsider.conversation_url(theirs)}/messages", body, **{"Idempotency-Key": "k"}
    )
    assert a.status_code == b.status_code == 200
    assert a.json()["current_message_id"] != b.json()["current_message_id"]


@override_settings(IDEMPOTENCY_WAIT_SECONDS=0)
async def test_a_retry_while_the_first_runs_is_409(slow_agent):
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    url = f"{owner.conversation_url(conversation)}/messages"
    client = async_client(owner)
    first = asyncio.create_task(apost(client, url, {"content": "one"}, **{"Idempotency-Key": "k"}))
    await await_until(Message.objects.filter(conversation=conversation).aexists, what="the first post's turn")
    retry = await apost(client, url, {"content": "one"}, **{"Idempotency-Key": "k"})
    assert retry.status_code == 409
    assert (await first).status_code == 200
    assert (await apost(client, url, {"content": "one"}, **{"Idempotency-Key": "k"})).content == (await first).content


def test_the_sweep_fails_stale_generations_and_keeps_partial_content(owner):
    stale = reply_in_progress(owner, "half an ans")
    fresh = reply_in_progress(owner, heartbeat_age=timedelta(0))
    out = io.StringIO()
    call_command("sweep_stale_messages", stdout=out)
    assert "Marked 1 stale" in out.getvalue()
    stale.refresh_from_db()
    assert stale.status == "failed" and stale.content == "half an ans" and "interrupted" in stale.error
    fresh.refresh_from_db()
    assert fresh.status == "in_progress"


def test_a_post_behind_a_dead_processs_reply_waits_for_its_takeover_or_heals_with_on_crash_fail(owner):
    """By default the reply is about to be continued by a sweep: the post is refused (409, naming it), and
    the reply is left to the sweep. With `on_crash: "fail"` the post fails it and runs."""
    stale = reply_in_progress(owner, "partial")
    url = f"{owner.conversation_url(stale.conversation)}/messages"
    response = owner.client.post(url, {"content": "next"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["details"]["message_id"] == stale.id
    stale.refresh_from_db()
    assert stale.status == "in_progress"

    owner.agent.options = {"on_crash": "fail"}
    owner.agent.save()
    response = owner.client.post(url, {"content": "next"}, format="json")
    assert response.status_code == 200
    stale.refresh_from_db()
    assert stale.status == "failed" and stale.content == "partial"


@pytest.mark.parametrize("body", [{"content": "x"}, {"regenerate": "live"}, {"continue": True}])
def test_a_post_behind_a_live_generation_is_409(owner, body):
    live = reply_in_progress(owner, "so far", heartbeat_age=timedelta(0))
    body = {key: live.id if value == "live" else value for key, value in body.items()}
    response = owner.client.post(f"{owner.conversation_url(live.conversation)}/messages", body, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["details"]["message_id"] == live.id
    assert Message.objects.filter(conversation=live.conversation).count() == 2  # nothing stored
    live.refresh_from_db()
    assert live.status == "in_progress" and live.content == "so far"
    assert Conversation.objects.get(pk=live.conversation_id).current_message_id == live.id


async def test_continue_after_a_cancel_runs_to_completion(slow_agent):
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    url = f"{owner.conversation_url(conversation)}/messages"
    client = async_client(owner)
    first = asyncio.create_task(apost(client, url, {"content": "a long answer please"}))
    await await_until(Message.objects.filter(conversation=conversation, role="assistant").aexists, what="the reply")
    reply = await Message.objects.aget(conversation=conversation, role="assistant")
    await client.post(f"{url}/{reply.id}/cancel")
    assert (await first).json()["messages"][1]["status"] == "cancelled"

    continued = await apost(client, url, {"continue": True})
    assert continued.status_code == 200
    assert continued.json()["messages"][1]["status"] == "completed"  # the old cancel does not stop it


async def _while_the_reply_runs(owner, conversation, change):
    """Post and wait; `change` (an async callable) runs once the reply is being generated."""
    url = f"{owner.conversation_url(conversation)}/messages"
    client = async_client(owner)
    posting = asyncio.create_task(apost(client, url, {"content": "What does the Rotterdam warehouse store?"}))
    await await_until(
        Message.objects.filter(conversation=conversation, status="in_progress").aexists, what="the reply to run"
    )
    await change(client)
    return await posting


async def test_a_rename_while_the_reply_runs_is_kept_and_never_shown_as_titled(slow_agent):
    owner = slow_agent
    conversation = await Conversation.objects.acreate(
        tenant=owner.tenant, agent=owner.agent, name="", title_source=TitleSource.PROPOSED
    )

    async def rename(client):
        response = await client.patch(
            owner.conversation_url(conversation), {"name": "Mine"}, content_type="application/json"
        )
        assert response.status_code == 200

    response = await _while_the_reply_runs(owner, conversation, rename)
    assert response.status_code == 200
    assert response.json()["conversation"]["name"] in ("", "Mine")  # as the turn read it, or since: not titled
    await conversation.arefresh_from_db()
    assert (conversation.name, conversation.title_source) == ("Mine", "user")


async def test_a_conversation_deleted_while_its_reply_runs_answers_404(slow_agent):
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()

    async def delete(client):
        assert (await client.delete(owner.conversation_url(conversation))).status_code == 200

    response = await _while_the_reply_runs(owner, conversation, delete)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert not await Message.objects.filter(conversation_id=conversation.id).aexists()


async def test_a_follower_finishes_from_the_stored_reply_when_the_log_stops_short(owner, settings):
    from turns.events import StreamRecord
    from turns.follow import message_events
    from turns.log import stream_log

    settings.STREAM_KEEPALIVE_SECONDS = 0.1
    conversation = await sync_to_async(owner.conversation)()
    reply = await Message.objects.acreate(
        tenant=owner.tenant, conversation=conversation, role="assistant", status=MessageStatus.IN_PROGRESS
    )
    record = StreamRecord()
    for event in ({"message": {"id": reply.id}}, {"content": "Half"}):
        await stream_log().append(reply.id, record.add(event), event)  # the live log, then its process died
    record.add({"error": "interrupted"})
    await Message.objects.filter(pk=reply.pk).aupdate(
        status=MessageStatus.FAILED, content="Half", stream_index=record.index, extra_events=record.extra
    )
    events = [entry async for batch in message_events(reply.id) for entry in batch]
    assert [event for _, event in events] == [
        {"message": {"id": reply.id}},
        {"content": "Half"},
        {"error": "interrupted"},
    ]


async def test_a_follower_of_a_quiet_log_learns_within_seconds_that_the_reply_was_settled_elsewhere(owner):
    """Its process died mid-reply and the sweep (anywhere) failed it: a follower waiting on the log does not
    wait for a keep-alive interval (15 s) to find out."""
    from turns.events import StreamRecord
    from turns.follow import SETTLED_CHECK_SECONDS, message_events
    from turns.log import stream_log

    conversation = await sync_to_async(owner.conversation)()
    reply = await Message.objects.acreate(
        tenant=owner.tenant, conversation=conversation, role="assistant", status=MessageStatus.IN_PROGRESS
    )
    record = StreamRecord()
    for event in ({"message": {"id": reply.id}}, {"content": "Half"}):
        await stream_log().append(reply.id, record.add(event), event)

    follower = message_events(reply.id)
    assert [event for _, event in await anext(follower)] == [{"message": {"id": reply.id}}, {"content": "Half"}]
    record.add({"error": "interrupted"})  # the sweep fails it; the log never hears of it
    await Message.objects.filter(pk=reply.pk).aupdate(
        status=MessageStatus.FAILED, content="Half", stream_index=record.index, extra_events=record.extra
    )
    settled = time.monotonic()
    async with asyncio.timeout(SETTLED_CHECK_SECONDS + 3):  # the keep-alive interval is 15 s
        rest = [event for batch in [batch async for batch in follower] for _, event in batch]
    assert rest == [{"error": "interrupted"}]
    assert time.monotonic() - settled <= SETTLED_CHECK_SECONDS + 1


async def _committed_turn(owner, **request):
    """A turn as a request commits it, its generation not started yet."""
    from core.db import in_worker
    from turns.runtime import ConversationRef, TurnRequest, turn_start_or_conflict

    conversation = await sync_to_async(owner.conversation)()
    turn = await in_worker(turn_start_or_conflict)(
        ref=ConversationRef.of(conversation), request=TurnRequest(content="a long answer please", **request)
    )
    return conversation, turn


async def _stored_end(message_id: str) -> tuple[str, list[dict]]:
    from turns.follow import message_events

    message = await Message.objects.aget(pk=message_id)
    events = [event async for batch in message_events(message_id) for _, event in batch]
    return message.status, events


async def test_a_cancel_between_commit_and_generation_start_is_not_lost(slow_agent):
    from turns.runtime import generation_cancel, generation_start

    _, turn = await _committed_turn(slow_agent)
    await generation_cancel(turn.message_id)  # no generation to stop yet, not even a live log
    await (await generation_start(turn))
    status, events = await _stored_end(turn.message_id)
    assert status == "cancelled"
    assert events[-1] == {"done": True, "status": "cancelled"}


async def test_a_cancel_before_the_generations_first_step_still_stores_its_end(slow_agent):
    from turns.runtime import generation_cancel, generation_start

    _, turn = await _committed_turn(slow_agent)
    generation = await generation_start(turn)
    await generation_cancel(turn.message_id)  # the task has not run a single step yet
    await generation
    status, events = await _stored_end(turn.message_id)
    assert status == "cancelled"
    assert events[-1] == {"done": True, "status": "cancelled"}


@pytest.mark.parametrize(("on_disconnect", "expected"), [("continue", "completed"), ("cancel", "cancelled")])
async def test_a_request_cancelled_while_its_turn_starts_still_gets_a_generation(slow_agent, on_disconnect, expected):
    from turns.runtime import ConversationRef, TurnRequest, turn_launch

    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    request = TurnRequest(content="a long answer please", on_disconnect=on_disconnect)
    launching = asyncio.ensure_future(turn_launch(ref=ConversationRef.of(conversation), request=request))
    await asyncio.sleep(0)  # it is now waiting for the turn's commit in a worker thread
    launching.cancel()  # as Django does when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await launching
    ended = Message.objects.filter(conversation=conversation, role="assistant").exclude(status="in_progress")
    reply = await await_until(ended.afirst, timeout=10, interval=0.02, what="the reply to end")
    assert reply.status == expected


def test_an_idempotency_claim_whose_process_died_is_taken_over_by_the_retry(owner, settings):
    from core.idempotency import request_fingerprint
    from core.models import IdempotencyKey

    settings.IDEMPOTENCY_WAIT_SECONDS = 0.3
    conversation = owner.conversation()
    url = f"{owner.conversation_url(conversation)}/messages"
    claim = {"tenant": owner.tenant, "fingerprint": request_fingerprint("POST", url, {"content": "hi"})}
    now = timezone.now()
    IdempotencyKey.objects.create(key="alive", claimed_until=now + timedelta(seconds=60), **claim)
    IdempotencyKey.objects.create(key="dead", claimed_until=now, **claim)

    still_running = owner.client.post(url, {"content": "hi"}, format="json", headers={"Idempotency-Key": "alive"})
    assert still_running.status_code == 409
    taken_over = owner.client.post(url, {"content": "hi"}, format="json", headers={"Idempotency-Key": "dead"})
    assert taken_over.status_code == 200
    replayed = owner.client.post(url, {"content": "hi"}, format="json", headers={"Idempotency-Key": "dead"})
    assert replayed.content == taken_over.content
    stored = IdempotencyKey.objects.get(tenant=owner.tenant, key="dead")
    assert stored.response_status == 200 and stored.claimed_until is None


async def test_following_a_reply_through_its_flushes_keeps_alive_and_ends_if_it_is_deleted(owner, settings):
    from turns.follow import message_events

    settings.STREAM_KEEPALIVE_SECONDS = 0.1
    conversation = await sync_to_async(owner.conversation)()
    reply = await Message.objects.acreate(  # running in another process: no live log here
        tenant=owner.tenant,
        conversation=conversation,
        role="assistant",
        status=MessageStatus.IN_PROGRESS,
        heartbeat_at=timezone.now(),
        stream_index=[[0, "message", 0, 0]],
        extra_events=[{"message": {"id": "-"}}],
    )
    follower = message_events(reply.id)
    assert await asyncio.wait_for(anext(follower), 5) == [(0, {"message": {"id": "-"}})]
    assert await asyncio.wait_for(anext(follower), 5) == []  # a keep-alive while nothing is flushed
    await Message.objects.filter(pk=reply.pk).adelete()
    assert await asyncio.wait_for(anext(follower), 5) == [(1, {"error": "The message was deleted."})]
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(follower), 5)


async def test_the_builtin_engines_pace_catches_up_after_the_server_was_busy(owner):
    """chunk_delay_ms paces the reply from its first chunk, like a model streaming from elsewhere: chunks
    that fell due while the event loop was blocked come at once, not one delay apart each."""
    context = TurnContext(
        tenant_id=owner.tenant.id,
        conversation_id=None,
        message_id=None,
        system_prompt="",
        history=[ChatMessage(role="user", content="pace")],
        options={"chunk_delay_ms": 20},
    )
    turns = 0

    async def count_turns() -> None:  # how many turns the event loop has taken
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count_turns())
    arrivals, turns_at = [], []
    async for event in BuiltinEngine().run(context):
        if isinstance(event, Content):
            arrivals.append(time.monotonic())
            turns_at.append(turns)
            if len(arrivals) == 1:
                time.sleep(0.15)  # the server is busy: chunks 2 to 8 fall due meanwhile
    counter.cancel()
    assert len(arrivals) > 10
    # Chunks 2 to 6 were all overdue: they follow each other at once (one delay apart each: 80 ms),
    # in one turn of the loop, as data waiting in a socket's buffer is read at once.
    assert arrivals[5] - arrivals[1] < 0.04
    assert turns_at[1] == turns_at[5]
    # The later ones keep the pace: chunk n is due n x 20 ms after the start.
    assert arrivals[-1] - arrivals[0] == pytest.approx(20e-3 * (len(arrivals) - 1), abs=0.1)


def test_continuing_a_reply_whose_process_died_follows_its_swept_end(owner):
    """With `on_crash: "fail"`, the continue sees the reply as the sweep left it: its partial content kept,
    and the new events numbered past the swept error (itself past anything the dead process may have
    streamed unflushed)."""
    owner.agent.options = {"on_crash": "fail"}
    owner.agent.save()
    stale = reply_in_progress(
        owner,
        "Partial answer",
        stream_index=[[0, "message", 0, 0], [1, "content", 0, 8], [2, "content", 8, 14]],
        extra_events=[{"message": {"id": "m"}}],
    )
    url = f"{owner.conversation_url(stale.conversation)}/messages"

    response = owner.client.post(url, {"continue": True}, format="json")

    assert response.status_code == 200, response.json()
    stale.refresh_from_db()
    assert stale.status == "completed" and stale.content.startswith("Partial answer")
    seqs = [entry[0] for entry in stale.stream_index]
    assert seqs[:3] == [0, 1, 2] and seqs == sorted(seqs)
    assert "error" not in [entry[1] for entry in stale.stream_index]  # the swept end was dropped
    assert min(seqs[3:]) > 2 + SWEPT_SEQ_SKIP  # a client that saw unflushed live ids still gets the rest


def test_the_sweep_stores_what_the_live_log_streamed_and_ends_the_log(owner):
    """Stored equals streamed: the dead process had streamed "Half of it" but flushed only "Hal"; the sweep
    keeps the log's text, numbers its error right after the log's events and publishes it there."""
    from turns.events import StreamRecord
    from turns.follow import message_events
    from turns.log import stream_log
    from turns.services import INTERRUPTED, message_sweep_stale

    stale = reply_in_progress(
        owner, "Hal", stream_index=[[0, "message", 0, 0], [1, "content", 0, 3]], extra_events=[{"message": {}}]
    )
    owner.agent.options = {"on_crash": "fail"}
    owner.agent.save()
    streamed = StreamRecord()
    for event in ({"message": {}}, {"thinking": "hm"}, {"content": "Hal"}, {"content": "f of it"}):
        async_to_sync(stream_log().append)(stale.id, streamed.add(event), event)

    assert message_sweep_stale() == (1, [])

    stale.refresh_from_db()
    assert (stale.status, stale.content, stale.thinking, stale.error) == ("failed", "Half of it", "hm", INTERRUPTED)
    assert [entry[:2] for entry in stale.stream_index] == [
        [0, "message"], [1, "thinking"], [2, "content"], [3, "content"], [4, "error"],
    ]  # fmt: skip

    async def follow() -> list:
        return [entry async for batch in message_events(stale.id) for entry in batch]

    assert async_to_sync(follow)() == [
        (0, {"message": {}}), (1, {"thinking": "hm"}), (2, {"content": "Hal"}), (3, {"content": "f of it"}),
        (4, {"error": INTERRUPTED}),
    ]  # fmt: skip
    async_to_sync(stream_log().reset)(stale.id)  # (the in-process log of this test's thread)


def test_a_reply_swept_without_a_live_log_is_followed_from_its_stored_text(owner):
    from turns.follow import message_events
    from turns.services import INTERRUPTED, message_sweep_stale

    stale = reply_in_progress(
        owner, "Partial", stream_index=[[0, "message", 0, 0], [1, "content", 0, 7]], extra_events=[{"message": {}}]
    )
    assert message_sweep_stale(fail=True) == (1, [])

    async def follow() -> list:
        return [event async for batch in message_events(stale.id) for _, event in batch]

    assert async_to_sync(follow)() == [{"message": {}}, {"content": "Partial"}, {"error": INTERRUPTED}]


async def test_a_slow_database_gets_flushes_an_interval_apart_not_back_to_back(slow_agent, settings, monkeypatch):
    """Each flush waits GENERATION_FLUSH_SECONDS after the previous one was stored: a database slower than
    the interval must not get them queued one after another (which slowed it further, until 500 streams
    took 38 s instead of 8)."""
    settings.GENERATION_FLUSH_SECONDS = 0.2
    calls: list[tuple[float, float]] = []
    store = progress.progress_store

    def slow_store(*args):
        started = time.monotonic()
        time.sleep(0.3)  # slower than the interval
        lost = store(*args)
        calls.append((started, time.monotonic()))
        return lost

    monkeypatch.setattr(progress, "progress_store", slow_store)
    # 89 chunks 30 ms apart: room for three flushes even when a busy machine delays the first one.
    slow_agent.agent.options = {"chunk_delay_ms": 30}
    await slow_agent.agent.asave()
    conversation = await sync_to_async(slow_agent.conversation)()
    response = await apost(
        async_client(slow_agent),
        f"{slow_agent.conversation_url(conversation)}/messages",
        {"content": "a question long enough for a reply of many chunks " * 3},
    )

    assert response.status_code == 200
    assert len(calls) >= 2
    for (_, ended), (started, _) in itertools.pairwise(calls):
        assert started - ended >= 0.2 - 0.02


def test_a_turn_finds_only_the_tenants_conversation_under_that_agent(owner, outsider):
    """turn_start reads the conversation the request names, once and locked: a deleted one, another
    agent's or another tenant's is a 404 (not a 500), and nothing is stored."""
    conversation, deleted = owner.conversation(), owner.conversation()
    ref = runtime.ConversationRef.of(deleted)
    deleted.delete()
    other_agent = Agent.objects.create(tenant=owner.tenant, name="Other")
    refs = [
        ref,
        runtime.ConversationRef(owner.tenant.id, other_agent.id, conversation.id),
        runtime.ConversationRef(outsider.tenant.id, conversation.agent_id, conversation.id),
    ]
    for ref in refs:
        with pytest.raises(NotFound):
            runtime.turn_start(ref=ref, request=runtime.TurnRequest(content="hello"))
    assert not Message.objects.exists()


def test_the_end_of_a_turn_stores_and_keeps_the_first_citation_of_each_number(owner):
    conversation = owner.conversation()
    turn = runtime.turn_start(ref=runtime.ConversationRef.of(conversation), request=runtime.TurnRequest(content="q"))
    cited = [
        {"number": 2, "source_name": "b.txt", "snippet": "second"},
        {"number": 1, "source_name": "a.txt", "snippet": "first"},
        {"number": 1, "source_name": "a.txt", "snippet": "again"},
    ]
    outcome = runtime.Outcome("completed", input_tokens=1, output_tokens=2)
    stream = StreamRecord.of(turn.stream)
    stream.add({"citations": cited[:2]}), stream.add({"content": "An answer."}), stream.add({"citations": cited[2:]})
    runtime._finish(turn, stream.snapshot(), outcome)

    stored = Message.objects.get(pk=turn.message_id)
    assert [(c.number, c.snippet) for c in stored.cited] == [(1, "first"), (2, "second")]
    assert (stored.status, stored.output_tokens) == ("completed", 2)


def test_a_swept_reply_keeps_the_tool_calls_and_citations_it_streamed(owner):
    """A reply whose process died is failed with what it streamed: its tool calls and citations are rows,
    as a reply that ends stores them (GET messages shows them)."""
    from turns.events import StreamRecord
    from turns.services import message_sweep_stale

    record = StreamRecord()
    call = {"id": "call_1", "name": "search_files", "arguments": {"query": "refunds"}}
    cited = {"number": 1, "source_id": "file_x", "source_name": "policy.pdf", "snippet": "Refunds take 5 days."}
    for event in [
        {"message": {}}, {"tool_call": call}, {"citations": [cited]},
        {"tool_result": {"id": "call_1", "status": "ok", "content": "Passages...", "content_type": "text"}},
        {"content": "Refunds take"},
    ]:  # fmt: skip
        record.add(event)
    stale = reply_in_progress(owner, record.content, stream_index=record.index, extra_events=record.extra)
    assert message_sweep_stale(fail=True) == (1, [])
    url = f"{owner.conversation_url(stale.conversation)}/messages"
    (shown,) = [m for m in owner.client.get(url).json()["items"] if m["id"] == stale.id]
    assert shown["status"] == "failed" and shown["content"] == "Refunds take"
    assert shown["tool_calls"] == [{**call, "status": "ok", "content": "Passages...", "content_type": "text"}]
    assert [(c["number"], c["source_id"]) for c in shown["citations"]] == [(1, "file_x")]
