"""The progress writer stores running replies' partial streams and heartbeats, one statement for all."""

import asyncio
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from conversations.models import Message, MessageStatus
from tests.conftest import reply_in_progress
from turns.events import StreamRecord
from turns.progress import ProgressWriter, progress_store

pytestmark = pytest.mark.django_db


def snapshot_of(*deltas: str):
    record = StreamRecord()
    for delta in deltas:
        record.add({"content": delta})
    return record.snapshot()


def test_it_stores_the_streams_of_running_replies_and_the_heartbeats_of_silent_ones(owner):
    streaming, silent, ended = reply_in_progress(owner), reply_in_progress(owner), reply_in_progress(owner)
    Message.objects.filter(pk=ended.pk).update(status=MessageStatus.COMPLETED, content="final")
    started = timezone.now()

    runs = [streaming.run_id, silent.run_id, ended.run_id]
    progress_store({streaming.id: snapshot_of("Hel", "lo"), ended.id: snapshot_of("stale")}, [silent.id], runs)

    streaming.refresh_from_db(), silent.refresh_from_db(), ended.refresh_from_db()
    assert streaming.content == "Hello"
    assert [entry[:2] for entry in streaming.stream_index] == [[0, "content"], [1, "content"]]
    assert streaming.heartbeat_at >= started and silent.heartbeat_at >= started
    assert silent.content == ""
    assert (ended.status, ended.content) == ("completed", "final")  # an ended reply is left alone


def test_a_run_that_no_longer_owns_its_reply_stores_nothing(owner):
    """A process that only looked dead (it stalled past the stale limit) and whose reply another process
    took over: its progress and heartbeats change nothing."""
    streaming, silent = reply_in_progress(owner, "taken over"), reply_in_progress(owner)
    before = silent.heartbeat_at

    lost = progress_store({streaming.id: snapshot_of("old run")}, [silent.id], ["another-run"])

    streaming.refresh_from_db(), silent.refresh_from_db()
    assert streaming.content == "taken over"
    assert silent.heartbeat_at == before
    assert lost == {streaming.id, silent.id}  # the writer stops those runs (ProgressWriter.write)
    runs = [streaming.run_id, silent.run_id]
    assert progress_store({streaming.id: snapshot_of("new")}, [silent.id], runs) == set()  # their own runs


@pytest.mark.django_db(transaction=True)
async def test_the_writer_stops_a_run_whose_reply_another_run_took_over(owner, settings):
    settings.GENERATION_FLUSH_SECONDS = 0.05
    reply = await sync_to_async(reply_in_progress)(owner, heartbeat_age=timedelta(0))
    await Message.objects.filter(pk=reply.pk).aupdate(run_id="the-other-process")
    lost = asyncio.Event()
    writer, record = ProgressWriter(), StreamRecord()
    writer.track(reply.id, reply.run_id, record, on_lost=lost.set)
    record.add({"content": "late"})
    try:
        await asyncio.wait_for(lost.wait(), timeout=5)
    finally:
        writer.forget(reply.id, record)
    assert (await Message.objects.aget(pk=reply.pk)).content == ""


def test_a_reply_whose_text_postgresql_refuses_does_not_stop_the_others(owner):
    good, bad = reply_in_progress(owner), reply_in_progress(owner)

    progress_store({bad.id: snapshot_of("nul \x00 here"), good.id: snapshot_of("fine")}, [], [bad.run_id, good.run_id])

    good.refresh_from_db(), bad.refresh_from_db()
    assert good.content == "fine"
    assert bad.content == ""


@pytest.mark.django_db(transaction=True)
async def test_a_silent_reply_gets_heartbeats_well_inside_the_stale_limit(owner, settings):
    """A reply that streams nothing for a while (a model thinking) is not taken for a dead process's."""
    settings.GENERATION_STALE_SECONDS, settings.GENERATION_FLUSH_SECONDS = 2, 0.05
    silent = await sync_to_async(reply_in_progress)(owner, heartbeat_age=timedelta(0))
    first = silent.heartbeat_at
    writer, record = ProgressWriter(), StreamRecord()
    writer.track(silent.id, silent.run_id, record, on_lost=lambda: None)
    started = time.monotonic()
    try:
        while (await Message.objects.aget(pk=silent.pk)).heartbeat_at == first:
            assert time.monotonic() - started < 1.5, "no heartbeat within three quarters of the stale limit"
            await asyncio.sleep(0.05)
    finally:
        writer.forget(silent.id, record)
    assert time.monotonic() - started >= 0.4  # a quarter of the limit (0.5 s), not every tick
