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
        log = self._logs.setdefault(message_id, _MemoryLog())
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
        self._logs.pop(message_id, None)

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
        waiter = asyncio.get_running_loop().create_future()
        log.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return [], False
        finally:
            if waiter in log.waiters:
                log.waiters.remove(waiter)
        entries = log.after(after)
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
class _Batch:
    """The appends of one event loop waiting for its next pipeline to Redis, and the task sending them."""

    appends: list[tuple[str, int, dict[str, Any], int | None, asyncio.Future]] = field(default_factory=list)
    sender: asyncio.Task | None = None


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
        self._expiring: set[str] = set()  # logs given their running TTL by this process

    def _client(self):
        import redis.asyncio as redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = redis.Redis.from_url(self.url, max_connections=settings.REDIS_MAX_CONNECTIONS)
            self._clients[loop] = client
        return client

    @staticmethod
    def _key(message_id: str) -> str:
        return f"parley:stream:{message_id}"

    async def append(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        # Queued at once for this event loop's next pipeline, in order: a generation cancelled while it
        # waits still has the event sent, and its end cannot overtake it (XADD refuses an id below the
        # last). One round trip for every append waiting, where one each made Redis's client the
        # bottleneck (500 streams, 25,000 events a second).
        await asyncio.shield(self._enqueue(message_id, seq, event))

    def _enqueue(self, message_id: str, seq: int, event: dict[str, Any]) -> asyncio.Future:
        terminal = is_terminal(event)
        # The TTL is set with a run's first event (long: the run may take hours) and its last (the log
        # outlives it STREAM_LOG_TTL_SECONDS), not with every event in between.
        ttl = None
        if terminal or message_id not in self._expiring:
            ttl = settings.STREAM_LOG_TTL_SECONDS if terminal else settings.STREAM_LOG_TTL_SECONDS * 24
        if terminal:
            self._expiring.discard(message_id)
        elif ttl is not None:
            self._expiring.add(message_id)
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _Batch()
        sent = loop.create_future()
        sent.add_done_callback(_retrieved)  # its caller may be gone: a failure is logged by the generation
        batch.appends.append((message_id, seq, event, ttl, sent))
        if batch.sender is None or batch.sender.done():
            batch.sender = loop.create_task(self._send_batches(batch))
        return sent

    async def _send_batches(self, batch: _Batch) -> None:
        while batch.appends:
            appends, batch.appends = batch.appends, []
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for message_id, seq, event, ttl, _ in appends:
                        key = self._key(message_id)
                        pipe.xadd(key, {"e": json.dumps(event)}, id=f"0-{seq + 1}")
                        if ttl is not None:
                            pipe.expire(key, ttl)
                    results = iter(await pipe.execute(raise_on_error=False))
            except Exception as exc:  # Redis unreachable: every append of the batch fails
                for message_id, seq, event, _, sent in appends:
                    self._failed(message_id, seq, event, sent, exc)
                continue
            for message_id, seq, event, ttl, sent in appends:
                added = next(results)
                if ttl is not None:
                    next(results)  # EXPIRE's answer: the entry is what the caller waits for
                if isinstance(added, Exception):
                    self._failed(message_id, seq, event, sent, added)
                    continue
                self._local.append_now(message_id, seq, event)  # once Redis has it: a reader may go on there
                if not sent.done():
                    sent.set_result(None)

    def _failed(self, message_id: str, seq: int, event: dict[str, Any], sent: asyncio.Future, exc: Exception) -> None:
        # A run's end still ends its mirror (and frees it): readers here stop, readers elsewhere finish
        # from the stored message once it no longer runs.
        if is_terminal(event):
            self._local.append_now(message_id, seq, event)
        if not sent.done():
            sent.set_exception(exc)

    async def reset(self, message_id: str) -> None:
        await self._client().delete(self._key(message_id))
        self._expiring.discard(message_id)
        await self._local.reset(message_id)

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
            response = await client.xread({key: f"0-{after + 1}"}, block=max(1, int(timeout * 1000)), count=500)
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
        """Whether a cancel was requested at or after `since` (a time.time(): the run's start)."""
        requested = await self._client().get(f"parley:cancel:{message_id}")
        return requested is not None and float(requested) >= since


_streams: MemoryStreams | RedisStreams | None = None


def streams() -> MemoryStreams | RedisStreams:
    global _streams
    if _streams is None or (isinstance(_streams, RedisStreams) and _streams.url != settings.REDIS_URL):
        _streams = RedisStreams(settings.REDIS_URL) if settings.REDIS_URL else MemoryStreams()
    return _streams
