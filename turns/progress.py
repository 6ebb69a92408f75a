"""The progress of the replies running in this process, stored by one writer per event loop.

Every GENERATION_FLUSH_SECONDS the writer stores the partial content of each running reply that streamed
something since its last write, and a heartbeat for each that was silent for a quarter of
GENERATION_STALE_SECONDS (so a live reply is never taken for a dead one's), in one
statement each and one worker-thread call: with a write per reply, hundreds of streaming replies keep
worker threads busy, and the event loop waits for the GIL behind them. The next tick is counted from when
a write ended, so a database slower than the interval is not sent writes back to back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from conversations.models import Message, MessageStatus
from core.db import in_worker
from core.tenancy import owner_scope, scoped_context
from turns.events import StreamRecord, StreamSnapshot

logger = logging.getLogger(__name__)


def heartbeat_seconds() -> float:
    """How long a silent reply goes without a heartbeat: well inside GENERATION_STALE_SECONDS."""
    return max(0.5, settings.GENERATION_STALE_SECONDS / 4)


@owner_scope()  # the runs of every tenant's replies this process has
def progress_store(snapshots: dict[str, StreamSnapshot], heartbeats: list[str], run_ids: list[str]) -> set[str]:
    """Store running replies' partial streams and the heartbeats of silent ones, of this process's runs
    (`run_ids`); returns the replies these runs no longer own. A reply that ended, was swept or taken over
    by another run meanwhile is left alone, and so is one whose row another transaction holds (a delete,
    its end): waiting for it could deadlock with a delete of several conversations."""
    now = timezone.now()
    stored: set[str] = set()
    with connection.cursor() as cursor:
        if heartbeats:
            cursor.execute(
                f"UPDATE {TABLE} SET heartbeat_at = %s WHERE id IN ({RUNNING_UNLOCKED}) RETURNING id",
                [now, heartbeats, MessageStatus.IN_PROGRESS, run_ids],
            )
            stored.update(row[0] for row in cursor.fetchall())
        if snapshots:
            try:
                stored |= _snapshots_store(cursor, snapshots, run_ids, now=now)
            except DatabaseError:  # one reply's text PostgreSQL refuses (a NUL) must not stop the others'
                logger.warning("Storing %d replies' progress together failed; one at a time", len(snapshots))
                for message_id, snapshot in snapshots.items():
                    try:
                        stored |= _snapshots_store(cursor, {message_id: snapshot}, run_ids, now=now)
                    except DatabaseError:
                        logger.warning("Storing the progress of %s failed", message_id, exc_info=True)
                        stored.add(message_id)  # still its run's: only its text was refused
        missing = [message_id for message_id in [*snapshots, *heartbeats] if message_id not in stored]
        if not missing:
            return set()
        # Not written: its row was locked (still ours), or it is no longer this run's.
        cursor.execute(f"SELECT id FROM {TABLE} WHERE id = ANY(%s) AND status = %s AND run_id = ANY(%s)", [
            missing, MessageStatus.IN_PROGRESS, run_ids,
        ])  # fmt: skip
        return set(missing) - {row[0] for row in cursor.fetchall()}


TABLE = Message._meta.db_table
# The running messages among a list of ids, of one of a list of runs (run ids are unique), whose rows no
# other transaction holds.
RUNNING_UNLOCKED = (
    f"SELECT id FROM {TABLE} WHERE id = ANY(%s) AND status = %s AND run_id = ANY(%s) FOR UPDATE SKIP LOCKED"
)


def _snapshots_store(cursor, snapshots: dict[str, StreamSnapshot], run_ids: list[str], *, now) -> set[str]:
    # One statement for every reply (UPDATE ... FROM VALUES): the ORM's bulk_update would build a CASE per
    # column and row, and compiling it holds the GIL for tens of milliseconds with hundreds of replies.
    rows = ", ".join(["(%s, %s, %s, %s::jsonb, %s::jsonb)"] * len(snapshots))
    values = [
        value
        for message_id, snapshot in snapshots.items()
        for value in (
            message_id,
            snapshot.content,
            snapshot.thinking,
            json.dumps(snapshot.index),
            json.dumps(snapshot.extra),
        )
    ]
    cursor.execute(
        f"UPDATE {TABLE} AS m SET content = v.content, thinking = v.thinking, stream_index = v.stream_index,"
        f" extra_events = v.extra_events, heartbeat_at = %s"
        f" FROM (VALUES {rows}) AS v (id, content, thinking, stream_index, extra_events)"
        f" WHERE m.id = v.id AND m.id IN ({RUNNING_UNLOCKED}) RETURNING m.id",
        [now, *values, list(snapshots), MessageStatus.IN_PROGRESS, run_ids],
    )
    return {row[0] for row in cursor.fetchall()}


@dataclass
class _Tracked:
    record: StreamRecord
    run_id: str
    on_lost: Callable[[], None]  # the run no longer owns its reply (another took it over)
    stored_seq: int  # the record's next_seq when it was last stored
    stored_at: float  # time.monotonic() of its last write


class ProgressWriter:
    def __init__(self) -> None:
        self._tracked: dict[str, _Tracked] = {}
        self._task: asyncio.Task | None = None

    def track(self, message_id: str, run_id: str, record: StreamRecord, on_lost: Callable[[], None]) -> None:
        """Store this run's progress of the reply from now on (its record as it was is stored already);
        `on_lost()` once a write finds the reply no longer this run's."""
        self._tracked[message_id] = _Tracked(record, run_id, on_lost, record.next_seq, time.monotonic())
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(  # every tenant's: the owner's scope
                self._run(), name="progress writer", context=scoped_context(None)
            )

    def forget(self, message_id: str, record: StreamRecord) -> None:
        tracked = self._tracked.get(message_id)
        if tracked is not None and tracked.record is record:  # `continue` reuses the id: only this run's
            del self._tracked[message_id]

    async def _run(self) -> None:
        try:
            while self._tracked:
                await asyncio.sleep(settings.GENERATION_FLUSH_SECONDS)
                await self.write()
        finally:
            self._task = None

    async def write(self) -> None:
        now = time.monotonic()
        snapshots: dict[str, StreamSnapshot] = {}
        written: dict[str, tuple[_Tracked, int]] = {}
        heartbeats: list[str] = []
        for message_id, tracked in self._tracked.items():
            # Taken on the event loop, so a stored index never points past the stored text.
            if tracked.record.next_seq != tracked.stored_seq:
                snapshots[message_id] = tracked.record.snapshot()
                written[message_id] = (tracked, tracked.record.next_seq)
            elif now - tracked.stored_at >= heartbeat_seconds():
                heartbeats.append(message_id)
                written[message_id] = (tracked, tracked.stored_seq)
        if not written:
            return
        try:
            run_ids = [tracked.run_id for tracked, _ in written.values()]
            lost = await in_worker(progress_store)(snapshots, heartbeats, run_ids)
        except Exception:  # a database blip: the next tick tries again; each reply's end is stored with retries
            logger.warning("Storing the progress of %d replies failed", len(written), exc_info=True)
            return
        stored_at = time.monotonic()
        for message_id, (tracked, seq) in written.items():
            tracked.stored_seq, tracked.stored_at = seq, stored_at
            if message_id in lost:
                logger.warning("Reply %s is no longer this run's (it was taken over): stopping it", message_id)
                tracked.on_lost()


_writers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def progress_writer() -> ProgressWriter:
    """This event loop's writer."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = ProgressWriter()
    return writer
