"""Never losing a reply, in one process: a drain hands a running reply over, a sweep takes a dead
process's reply over and continues it on the same stream, and what is stored is what was streamed.
(tests/test_cluster.py does the same with real processes, nginx, SIGTERM and kill -9.)"""

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from agents.engines.builtin import chunks
from conversations.models import Message, MessageStatus
from core import drain
from tests.conftest import async_client, await_until, reply_in_progress, uninterrupted_text
from turns import runtime
from turns.follow import message_events
from turns.log import stream_log
from turns.log.journal import Journal
from turns.log.memory import MemoryLog
from turns.maintenance import maintenance_forever
from turns.services import message_claim_if_stale

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _serving():
    yield
    drain.drain_reset()


async def followed(message_id: str, after: int = -1) -> list[tuple[int, dict]]:
    return [entry async for batch in message_events(message_id, after=after) for entry in batch]


def content_of(entries) -> str:
    return "".join(event.get("content", "") for _, event in entries)


async def test_a_dead_processs_reply_is_continued_to_the_text_an_uninterrupted_one_has(owner):
    """Its process streamed the first words and died; the sweep of another claims it, continues it on the
    same stream with higher ids, and the builtin engine ends it exactly as if nothing had happened."""
    words = chunks(uninterrupted_text("q"))
    reply = await sync_to_async(reply_in_progress)(owner)
    log = stream_log()
    await log.reset(reply.id)
    streamed = [(0, {"message": {"id": reply.id}}), *[(seq, {"content": w}) for seq, w in enumerate(words[:5], 1)]]
    for seq, event in streamed:
        await log.append(reply.id, seq, event)

    failed, continued = await runtime.stale_replies_take_over()

    assert (failed, continued) == (0, 1)
    entries = await followed(reply.id)
    assert entries[: len(streamed)] == streamed  # what the followers had seen, unchanged
    seqs = [seq for seq, _ in entries]
    assert seqs == sorted(set(seqs))  # nothing repeated, ids only go up
    assert entries[-1][1] == {"done": True, "status": "completed"}
    stored = await Message.objects.aget(pk=reply.pk)
    assert stored.status == MessageStatus.COMPLETED
    assert stored.content == content_of(entries) == "".join(words)


async def test_a_reply_showing_signs_of_life_is_not_taken_and_a_claim_is_made_once(owner):
    alive = await sync_to_async(reply_in_progress)(owner, heartbeat_age=timedelta(0))
    assert await runtime.stale_replies_take_over() == (0, 0)
    assert (await Message.objects.aget(pk=alive.pk)).status == MessageStatus.IN_PROGRESS

    dead = await sync_to_async(reply_in_progress)(owner, "So far")
    first = await sync_to_async(message_claim_if_stale)(dead)
    second = await sync_to_async(message_claim_if_stale)(dead)  # another process, with the same old read
    assert first is not None and second is None
    stored = await Message.objects.aget(pk=dead.pk)
    assert stored.run_id == first.message.run_id != dead.run_id
    assert first.stream.content == "So far"


async def test_on_crash_fail_ends_the_reply_failed_with_the_streamed_text(owner):
    owner.agent.options = {"on_crash": "fail"}
    await owner.agent.asave()
    reply = await sync_to_async(reply_in_progress)(owner)
    log = stream_log()
    await log.reset(reply.id)
    for seq, event in enumerate([{"message": {}}, {"content": "Half "}, {"content": "of it"}]):
        await log.append(reply.id, seq, event)

    assert await runtime.stale_replies_take_over() == (1, 0)

    stored = await Message.objects.aget(pk=reply.pk)
    entries = await followed(reply.id)
    assert stored.status == MessageStatus.FAILED and "interrupted" in stored.error
    assert stored.content == content_of(entries) == "Half of it"
    assert "error" in entries[-1][1]


async def test_a_drain_hands_over_what_still_runs_and_the_next_sweep_finishes_it(slow_agent):
    """A reply longer than the drain: stopped at its end with its progress stored and its heartbeat made
    stale, so the next sweep (of any process) continues it; one stream, completed, stored as streamed."""
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    url = f"{owner.conversation_url(conversation)}/stream"
    client = async_client(owner)
    response = await client.post(url, {"content": "q"}, content_type="application/json")
    message_id = (await anext(aiter(response.streaming_content))).decode().split('"id":"')[1].split('"')[0]
    await await_until(lambda: len(_running_content(message_id)) > 0, what="the first words")

    assert await runtime.generations_drain(seconds=0.1) == 1

    handed = await Message.objects.aget(pk=message_id)
    assert handed.status == MessageStatus.IN_PROGRESS and handed.content  # its progress, stored
    drain.drain_reset()  # (this test's process plays the surviving one)
    assert await runtime.stale_replies_take_over() == (0, 1)
    entries = await followed(message_id)
    assert entries[-1][1] == {"done": True, "status": "completed"}
    seqs = [seq for seq, _ in entries]
    assert seqs == sorted(set(seqs))
    stored = await Message.objects.aget(pk=message_id)
    assert stored.content == content_of(entries) == uninterrupted_text("q")


def _running_content(message_id: str) -> str:
    generation = runtime._running.get(message_id)
    return generation.stream.content if generation is not None else ""


async def test_a_draining_process_refuses_work_and_sends_streams_elsewhere(owner):
    reply = await sync_to_async(reply_in_progress)(owner, "Partial", heartbeat_age=timedelta(0))
    conversation = await sync_to_async(lambda: reply.conversation)()
    drain.drain_begin()

    health = await AsyncClient().get("/healthz")
    turn = await async_client(owner).post(
        f"{owner.conversation_url(conversation)}/messages", {"content": "q"}, content_type="application/json"
    )
    joined = await async_client(owner).get(
        f"{owner.conversation_url(conversation)}/messages/{reply.id}/stream", HTTP_ACCEPT="text/event-stream"
    )
    body = b"".join([chunk async for chunk in joined.streaming_content])

    assert health.status_code == 503 and health.json()["status"] == "draining"
    assert turn.status_code == 503 and turn.json()["error"]["code"] == "unavailable"
    assert turn["Retry-After"] == "1"
    # A reply running elsewhere (not here): its stream ends at once, telling the client to come back.
    assert body.endswith(b'retry: 500\ndata: {"reconnect": {"retry_ms": 500}}\n\n')


async def test_a_draining_process_takes_nothing_over(owner):
    """Its sweep stops with the drain: what it took over it would only have to hand over again."""
    dead = await sync_to_async(reply_in_progress)(owner, "So far")
    drain.drain_begin()
    await asyncio.wait_for(maintenance_forever(), timeout=5)
    assert (await Message.objects.aget(pk=dead.pk)).run_id == dead.run_id


async def test_a_turn_starting_after_the_hand_over_is_handed_over_before_its_first_step(owner):
    conversation = await sync_to_async(owner.conversation)()
    drain.drain_begin(), drain.drain_handed_over()
    plan, task = await runtime.turn_launch(
        ref=runtime.ConversationRef.of(conversation), request=runtime.TurnRequest(content="q")
    )
    ending = await task
    stored = await Message.objects.aget(pk=plan.message_id)
    assert ending.outcome.status == MessageStatus.IN_PROGRESS == stored.status
    assert stored.run_id != plan.run_id  # no run's: the next sweep of any process claims it
    drain.drain_reset()
    assert await runtime.stale_replies_take_over() == (0, 1)
    entries = await followed(plan.message_id)
    assert content_of(entries) == uninterrupted_text("q") == (await Message.objects.aget(pk=plan.message_id)).content


async def test_a_post_and_wait_whose_reply_is_handed_over_gets_503_and_its_key_stays_free(slow_agent):
    """The answer names the reply, which goes on elsewhere; the Idempotency-Key is not bound to the 503, so
    a retry is not answered 503 for a day: it finds the reply running (409, naming it)."""
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    url, client = f"{owner.conversation_url(conversation)}/messages", async_client(owner)
    post = {"path": url, "data": {"content": "q"}, "content_type": "application/json", "HTTP_IDEMPOTENCY_KEY": "k1"}
    waiting = asyncio.create_task(client.post(**post))
    await await_until(lambda: any(_running_content(m) for m in list(runtime._running)), what="the reply's words")

    await runtime.generations_drain(seconds=0)
    response = await waiting

    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
    message_id = response.json()["error"]["details"]["message_id"]
    retry = await client.post(**post)
    assert retry.status_code == 409 and retry.json()["error"]["details"]["message_id"] == message_id


async def test_without_redis_the_journal_on_disk_keeps_what_was_streamed_for_the_next_start(tmp_path):
    streamed = [(0, {"message": {}}), (1, {"thinking": "hm"}), (2, {"content": "Half "}), (3, {"content": "of it"})]
    log = MemoryLog(journal=Journal(tmp_path))
    for seq, event in streamed:
        log.append_now("msg_x", seq, event)
    with (tmp_path / "msg_x.jsonl").open("ab") as file:
        file.write(b'[4,{"content":"cut sh')  # the process died in the middle of a write

    after_restart = MemoryLog(journal=Journal(tmp_path))
    assert await after_restart.entries("msg_x") == streamed
    for seq, event in streamed:  # the taken-over run writes the events again: read once
        after_restart.append_now("msg_x", seq, event)
    assert await MemoryLog(journal=Journal(tmp_path)).entries("msg_x") == streamed
    after_restart.append_now("msg_x", 100_004, {"done": True, "status": "completed"})
    assert not (tmp_path / "msg_x.jsonl").exists()  # gone with the reply's end
