"""Per-message event logs and cancel signals.

With REDIS_URL each generation's events go to a Redis Stream (`parley:stream:<message id>`, entry ids
`0-<seq+1>`) and cancel requests are Redis keys, so any daphne process can join, resume or cancel a
generation running in another. Without it an in-process log serves a single process. Either way the log
expires STREAM_LOG_TTL_SECONDS after the generation ends (in-process: at once); from then on the
stream is rebuilt from the stored message (see conversations.events).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

Entry = tuple[int, dict[str, Any]]


def _entry_seq(entry: Entry) -> int:
    return entry[0]


def is_terminal(event: dict[str, Any]) -> bool:
    return "done" in event or "error" in event


@dataclass
class _MemoryLog:
    entries: list[Entry] = field(default_factory=list)  # in seq order; seqs may skip (a continued reply)

    def after(self, seq: int) -> list[Entry]:
        return self.entries[bisect.bisect_right(self.entries, seq, key=_entry_seq) :]

    waiters: list[asyncio.Future] = field(default_factory=list)


class MemoryStreams:
    """A single process's logs, of running generations only: a finished one is dropped at once, since
    its stored message rebuilds it exactly. Waiters may live on other event loops (the test client
    makes one per request); those are woken with call_soon_threadsafe."""

    def __init__(self) -> None:
        self._logs: dict[str, _MemoryLog] = {}
        self._cancelled: dict[str, float] = {}

    async def append(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        self.append_now(message_id, seq, event)

    def append_now(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        """`append` from code that cannot await (it never needs to wait)."""
        log = self._logs.get(message_id)
        if log is None:  # not setdefault(): that would build a log for every event
            log = self._logs[message_id] = _MemoryLog()
        log.entries.append((seq, event))
        if is_terminal(event):
            del self._logs[message_id]
        waiters, log.waiters = log.waiters, []
        loop = asyncio.get_running_loop()
        for waiter in waiters:
            if waiter.done():
                continue
            if waiter.get_loop() is loop:
                waiter.set_result(None)
            else:
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    async def reset(self, message_id: str) -> None:
        """Start the message's log afresh (a new run: `continue` reuses the message id). Cancel requests
        stay: one made since the run started is for it (see is_cancel_requested)."""
        self.drop(message_id)

    def drop(self, message_id: str) -> None:
        """Forget the message's log; its readers wake and find none."""
        log = self._logs.pop(message_id, None)
        for waiter in log.waiters if log is not None else []:
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    async def read(
        self, message_id: str, after: int, timeout: float, *, wait: bool = True
    ) -> tuple[list[Entry], bool] | None:
        """Entries with seq > after (waiting up to `timeout` for one, if `wait`) and whether the log has
        ended; None when there is no live log (never was, or finished)."""
        log = self._logs.get(message_id)
        if log is None:
            return None
        if log.entries and log.entries[-1][0] > after:
            return log.after(after), False
        if not wait:
            return [], False
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        log.waiters.append(waiter)
        # Woken by an append, by the log's end, or by this timer: a plain timer, where wait_for() cost a
        # second future, callbacks and a timer for every event a client follows.
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in log.waiters:
                log.waiters.remove(waiter)
        entries = log.after(after)  # none after the timeout
        return entries, bool(entries) and is_terminal(entries[-1][1])

    async def request_cancel(self, message_id: str) -> None:
        # Kept even before the run has a log: it may be between its commit and its first event.
        now = time.time()
        expired = now - settings.STREAM_LOG_TTL_SECONDS
        for stale in [key for key, when in self._cancelled.items() if when < expired]:
            del self._cancelled[stale]
        self._cancelled[message_id] = now

    async def is_cancel_requested(self, message_id: str, *, since: float = 0.0) -> bool:
        """Whether a cancel was requested at or after `since` (a time.time(): the run's start)."""
        return self._cancelled.get(message_id, -1.0) >= since


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[1]) - 1


@dataclass
class _Write:
    """An XADD of one event (with an EXPIRE when `ttl`), or with `event` None the DELETE of a log."""

    message_id: str
    seq: int
    event: dict[str, Any] | None
    fields: dict[str, str] | None
    ttl: int | None
    sent: asyncio.Future


@dataclass
class _Batch:
    """The writes of one event loop waiting for its next pipeline to Redis, and the task sending them."""

    writes: list[_Write] = field(default_factory=list)
    sender: asyncio.Task | None = None


@dataclass
class _Lookups:
    """The cancel keys one event loop's generations wait to read, and the task reading them in one MGET."""

    waiting: dict[str, list[asyncio.Future]] = field(default_factory=dict)
    reader: asyncio.Task | None = None


class RedisStreams:
    def __init__(self, url: str) -> None:
        self.url = url
        # redis.asyncio connections belong to one event loop: one client per loop.
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # The generations running in this process, mirrored in memory: a client following one of them
        # here reads the mirror, not Redis (a blocking XREAD per event and per client). Clients of other
        # processes, and every client once the generation has ended, read Redis.
        self._local = MemoryStreams()
        self._batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # of each event loop
        self._expiring: dict[str, float] = {}  # when this process last set a running log's TTL
        self._lookups: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # of each event loop

    def _client(self, *, blocking: bool = False):
        """This event loop's client for commands, or with `blocking` for the reads that wait for events.

        Apart, so that each has its timeout: a command fails after REDIS_TIMEOUT_SECONDS, while an XREAD
        may block for the keep-alive interval (15 s) first. With redis-py's single default (5 s), a client
        following a run from another process lost its stream whenever the model was quiet for 5 s. And
        readers waiting in XREAD cannot take every connection from the writers.
        """
        import redis.asyncio as redis

        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            timeout = settings.REDIS_TIMEOUT_SECONDS
            clients = self._clients[loop] = tuple(
                redis.Redis.from_url(
                    self.url,
                    max_connections=settings.REDIS_MAX_CONNECTIONS,
                    socket_connect_timeout=timeout,
                    socket_timeout=timeout + wait,
                )
                for wait in (0, settings.STREAM_KEEPALIVE_SECONDS)  # the longest a read blocks
            )
        return clients[blocking]

    @staticmethod
    def _key(message_id: str) -> str:
        return f"parley:stream:{message_id}"

    async def append(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        # Queued at once for this event loop's next pipeline, in order: a generation cancelled while it
        # waits still has the event sent, and its end cannot overtake it (XADD refuses an id below the
        # last). One round trip for every write waiting, where one each made Redis's client the
        # bottleneck (500 streams, 25,000 events a second).
        fields = {"e": json.dumps(event)}  # here: an event that cannot be encoded fails only its caller
        terminal = is_terminal(event)
        # The TTL is set with a run's first event and then about every half TTL (long: the run may take
        # hours), and with its last (the log outlives it STREAM_LOG_TTL_SECONDS).
        ttl, now = None, time.monotonic()
        running_ttl = settings.STREAM_LOG_TTL_SECONDS * 24
        if terminal:
            ttl = settings.STREAM_LOG_TTL_SECONDS
            self._expiring.pop(message_id, None)
        elif now - self._expiring.get(message_id, -running_ttl) >= running_ttl / 2:
            ttl = running_ttl
            self._expiring[message_id] = now
        await asyncio.shield(self._enqueue(message_id, seq, event, fields, ttl))

    async def reset(self, message_id: str) -> None:
        # In the same queue as the appends: a previous run's last events still waiting go out before it.
        self._expiring.pop(message_id, None)
        await asyncio.shield(self._enqueue(message_id, -1, None, None, None))

    def _enqueue(
        self, message_id: str, seq: int, event: dict[str, Any] | None, fields: dict[str, str] | None, ttl: int | None
    ) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _Batch()
        sent = loop.create_future()
        sent.add_done_callback(_retrieved)  # its caller may be gone: the generation logs its own failures
        batch.writes.append(_Write(message_id, seq, event, fields, ttl, sent))
        if batch.sender is None:
            batch.sender = loop.create_task(self._send_batches(batch))
        return sent

    async def _send_batches(self, batch: _Batch) -> None:
        writes: list[_Write] = []
        try:
            while batch.writes:
                writes, batch.writes = batch.writes, []
                try:
                    results = iter(await self._pipeline(writes))
                except Exception as exc:  # Redis unreachable: every write of the batch fails
                    for write in writes:
                        self._failed(write, exc)
                    continue
                for write in writes:
                    outcome = next(results)
                    if write.ttl is not None:
                        next(results)  # EXPIRE's answer: the entry is what the caller waits for
                    if isinstance(outcome, Exception) and not await self._added_already(write, outcome):
                        self._failed(write, outcome)
                        continue
                    # Mirrored once Redis has it, in the same order: a reader may go on there.
                    if write.event is None:
                        self._local.drop(write.message_id)
                    else:
                        self._local.append_now(write.message_id, write.seq, write.event)
                    if not write.sent.done():
                        write.sent.set_result(None)
        finally:
            batch.sender = None  # (it references the loop, the key of `_batches`)
            for write in [*writes, *batch.writes]:  # cancelled with the loop, or a bug: no caller waits forever
                if not write.sent.done():
                    write.sent.cancel()
            batch.writes = []

    async def _pipeline(self, writes: list[_Write]) -> list:
        async with self._client().pipeline(transaction=False) as pipe:
            for write in writes:
                key = self._key(write.message_id)
                if write.event is None:
                    pipe.delete(key)
                    continue
                pipe.xadd(key, write.fields, id=f"0-{write.seq + 1}")
                if write.ttl is not None:
                    pipe.expire(key, write.ttl)
            return await pipe.execute(raise_on_error=False)

    async def _added_already(self, write: _Write, refusal: Exception) -> bool:
        """Whether an XADD that Redis refused for its id had in fact been applied: redis-py sends a pipeline
        again when its connection drops, and the first attempt may have run before the drop. The entry is
        then there under the same id, with the same event."""
        if write.event is None or "equal or smaller than the target stream top item" not in str(refusal):
            return False
        entry_id = f"0-{write.seq + 1}"
        try:
            found = await self._client().xrange(self._key(write.message_id), min=entry_id, max=entry_id)
        except Exception:  # Redis is gone again: the write stays failed
            return False
        return bool(found) and found[0][1].get(b"e") == write.fields["e"].encode()

    def _failed(self, write: _Write, exc: Exception) -> None:
        # The mirror stops where Redis did, and is freed: readers here go on from Redis or, once the
        # reply no longer runs, from the stored message.
        self._local.drop(write.message_id)
        self._expiring.pop(write.message_id, None)
        if not write.sent.done():
            write.sent.set_exception(exc)

    async def read(
        self, message_id: str, after: int, timeout: float, *, wait: bool = True
    ) -> tuple[list[Entry], bool] | None:
        local = await self._local.read(message_id, after, timeout, wait=wait)
        if local is not None:
            return local
        client = self._client()
        key = self._key(message_id)
        if wait:
            # Following a live log: one blocking XREAD per batch of events.
            response = await self._client(blocking=True).xread(
                {key: f"0-{after + 1}"}, block=max(1, int(timeout * 1000)), count=500
            )
            if response:
                return self._entries(response[0][1])
        # First read, or nothing for `timeout`: is there a log at all, and has it ended?
        found = await client.xrange(key, min=f"0-{after + 2}", count=500)
        if found:
            return self._entries(found)
        last = await client.xrevrange(key, count=1)
        if not last:
            return None
        if _seq(last[0][0]) > after:  # appended between the two calls: read it, never skip it
            return self._entries(await client.xrange(key, min=f"0-{after + 2}", count=500))
        return [], is_terminal(json.loads(last[0][1][b"e"]))

    @staticmethod
    def _entries(found) -> tuple[list[Entry], bool]:
        entries = [(_seq(entry_id), json.loads(fields[b"e"])) for entry_id, fields in found]
        return entries, bool(entries) and is_terminal(entries[-1][1])

    async def request_cancel(self, message_id: str) -> None:
        await self._client().set(f"parley:cancel:{message_id}", time.time(), ex=settings.STREAM_LOG_TTL_SECONDS)

    async def is_cancel_requested(self, message_id: str, *, since: float = 0.0) -> bool:
        """Whether a cancel was requested at or after `since` (a time.time(): the run's start).

        Every running generation asks twice a second. The questions of one event loop that wait together
        are answered by one MGET, where a GET each (1,000 round trips a second for 500 generations)
        made the Redis client most of the process's work."""
        loop = asyncio.get_running_loop()
        lookups = self._lookups.get(loop)
        if lookups is None:
            lookups = self._lookups[loop] = _Lookups()
        answer = loop.create_future()
        lookups.waiting.setdefault(message_id, []).append(answer)
        if lookups.reader is None:
            lookups.reader = loop.create_task(self._read_cancels(lookups))
        requested = await answer
        return requested is not None and float(requested) >= since

    async def _read_cancels(self, lookups: _Lookups) -> None:
        waiting: dict[str, list[asyncio.Future]] = {}
        try:
            while lookups.waiting:
                waiting, lookups.waiting = lookups.waiting, {}
                try:
                    values = await self._client().mget([f"parley:cancel:{message_id}" for message_id in waiting])
                except Exception as exc:  # Redis unreachable: every question of the batch fails
                    values = [exc] * len(waiting)
                for answers, value in zip(waiting.values(), values, strict=True):
                    for answer in answers:
                        if answer.done():  # its caller is gone
                            continue
                        if isinstance(value, Exception):
                            answer.set_exception(value)
                        else:
                            answer.set_result(value)
                waiting = {}
        finally:
            lookups.reader = None  # (it references the loop, the key of `_lookups`)
            for answers in [*waiting.values(), *lookups.waiting.values()]:  # cancelled with the loop
                for answer in answers:
                    answer.cancel()
            lookups.waiting = {}


_streams: MemoryStreams | RedisStreams | None = None


def streams() -> MemoryStreams | RedisStreams:
    global _streams
    if _streams is None or (isinstance(_streams, RedisStreams) and _streams.url != settings.REDIS_URL):
        _streams = RedisStreams(settings.REDIS_URL) if settings.REDIS_URL else MemoryStreams()
    return _streams
