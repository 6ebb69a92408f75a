"""The Redis stream log: each generation's events in a Redis Stream (`parley:stream:<message id>`, entry
ids `0-<seq+1>`) and cancel requests as Redis keys, so that any server process can join, resume or cancel
a generation running in another.

Three parts, each with its own client use: the writer batches one event loop's appends into pipelines,
the reader follows a log (from this process's mirror when the generation runs here), and the cancel
flags answer one event loop's questions together.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from django.conf import settings
from redis.exceptions import ResponseError

from turns.events import Entry, is_terminal
from turns.log.memory import MemoryLog

# What Redis answers an XADD whose id is not above the stream's last one: the event is there already
# (redis-py sends a pipeline again when its connection drops, and the first attempt may have run).
ALREADY_APPENDED = "equal or smaller than the target stream top item"


ENTRIES_PAGE = 1000


def stream_key(message_id: str) -> str:
    return f"parley:stream:{message_id}"


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[1]) - 1


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class RedisClients:
    """This process's clients, one pair per event loop (redis.asyncio connections belong to one loop).

    Commands fail after REDIS_TIMEOUT_SECONDS, while a read that waits for events may block for the
    keep-alive interval first: they get separate clients, each with its timeout, and readers waiting in
    XREAD cannot take every connection from the writers.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, *, blocking: bool = False) -> redis.Redis:
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


@dataclass
class _Write:
    """An append of one event (with an EXPIRE when `ttl`), or with `event` None the DELETE of a log."""

    message_id: str
    seq: int
    event: dict[str, Any] | None
    encoded: str
    ttl: int | None
    sent: asyncio.Future


@dataclass
class _Batch:
    """The writes of one event loop waiting for its next pipeline, and the task sending them."""

    writes: list[_Write] = field(default_factory=list)
    sender: asyncio.Task | None = None


class RedisLogWriter:
    """Appends of every generation of an event loop go out together, one pipeline per round trip: one
    command each made Redis's client the bottleneck (500 streams, 25,000 events a second). Writes are
    queued in order, so a generation's end cannot overtake its events, and mirrored in `local` once
    Redis has them."""

    def __init__(self, clients: RedisClients, local: MemoryLog) -> None:
        self.clients = clients
        self.local = local
        self._batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # of each event loop
        self._expiring: dict[str, float] = {}  # when this process last set a running log's TTL

    async def append(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        encoded = json.dumps(event)  # here: an event that cannot be encoded fails only its caller
        # The TTL is set with a run's first event and then about every half TTL (a run may take hours),
        # and with its last (the log outlives it STREAM_LOG_TTL_SECONDS).
        ttl, now = None, time.monotonic()
        running_ttl = settings.STREAM_LOG_TTL_SECONDS * 24
        if is_terminal(event):
            ttl = settings.STREAM_LOG_TTL_SECONDS
            self._expiring.pop(message_id, None)
        elif now - self._expiring.get(message_id, -running_ttl) >= running_ttl / 2:
            ttl = running_ttl
            self._expiring[message_id] = now
        # Shielded: a generation cancelled while it waits still has the event sent.
        await asyncio.shield(self._enqueue(_Write(message_id, seq, event, encoded, ttl, None)))

    async def reset(self, message_id: str) -> None:
        # In the same queue as the appends: a previous run's last events still waiting go out before it.
        self._expiring.pop(message_id, None)
        await asyncio.shield(self._enqueue(_Write(message_id, -1, None, "", None, None)))

    def _enqueue(self, write: _Write) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _Batch()
        write.sent = loop.create_future()
        write.sent.add_done_callback(_retrieved)  # its caller may be gone: the generation logs its failures
        batch.writes.append(write)
        if batch.sender is None:
            batch.sender = loop.create_task(self._send_batches(batch))
        return write.sent

    async def _send_batches(self, batch: _Batch) -> None:
        writes: list[_Write] = []
        try:
            while batch.writes:
                writes, batch.writes = batch.writes, []
                try:
                    results = await self._pipeline(writes)
                except Exception as exc:  # Redis unreachable: every write of the batch fails
                    results = [exc] * len(writes)
                for write, outcome in zip(writes, results, strict=True):
                    if isinstance(outcome, Exception):
                        self._failed(write, outcome)
                        continue
                    if write.event is None:
                        self.local.drop(write.message_id)
                    else:
                        self.local.append_now(write.message_id, write.seq, write.event)
                    if not write.sent.done():
                        write.sent.set_result(None)
        finally:
            batch.sender = None  # (it references the loop, the key of `_batches`)
            for write in [*writes, *batch.writes]:  # cancelled with the loop, or a bug: no caller waits forever
                if not write.sent.done():
                    write.sent.cancel()
            batch.writes = []

    async def _pipeline(self, writes: list[_Write]) -> list:
        """One outcome per write: None, or the exception that failed it. An event's entry id is `0-<seq+1>`,
        so an XADD that Redis refuses as not above the stream's top finds its event there already (this
        process is its message's only writer); the TTL goes with it, in the same pipeline."""
        async with self.clients.get().pipeline(transaction=False) as pipe:
            for write in writes:
                key = stream_key(write.message_id)
                if write.event is None:
                    pipe.delete(key)
                    continue
                pipe.xadd(key, {"e": write.encoded}, id=f"0-{write.seq + 1}")
                if write.ttl is not None:
                    pipe.expire(key, write.ttl)
            replies = iter(await pipe.execute(raise_on_error=False))
        outcomes = []
        for write in writes:
            reply = next(replies)
            if write.event is not None and write.ttl is not None:
                expired = next(replies)
                reply = expired if isinstance(expired, Exception) and not isinstance(reply, Exception) else reply
            if isinstance(reply, ResponseError) and ALREADY_APPENDED in str(reply):
                reply = None
            outcomes.append(reply if isinstance(reply, Exception) else None)
        return outcomes

    def _failed(self, write: _Write, exc: Exception) -> None:
        # The mirror stops where Redis did, and is freed: readers here go on from Redis or, once the
        # reply no longer runs, from the stored message.
        self.local.drop(write.message_id)
        self._expiring.pop(write.message_id, None)
        if not write.sent.done():
            write.sent.set_exception(exc)


class RedisLogReader:
    """Reads a log: this process's mirror while the generation runs here (no XREAD per event and per
    client), Redis otherwise."""

    def __init__(self, clients: RedisClients, local: MemoryLog) -> None:
        self.clients = clients
        self.local = local

    async def read(
        self, message_id: str, after: int, timeout: float, *, wait: bool = True
    ) -> tuple[list[Entry], bool] | None:
        local = await self.local.read(message_id, after, timeout, wait=wait)
        if local is not None:
            return local
        client = self.clients.get()
        key = stream_key(message_id)
        if wait:  # following a live log: one blocking XREAD per batch of events
            response = await self.clients.get(blocking=True).xread(
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

    async def entries(self, message_id: str) -> list[Entry]:
        """Every entry of the message's log in Redis, oldest first (none when it has none)."""
        client, key, found, start = self.clients.get(), stream_key(message_id), [], "-"
        while page := await client.xrange(key, min=start, count=ENTRIES_PAGE):
            found += page
            if len(page) < ENTRIES_PAGE:
                break
            start = f"({page[-1][0].decode()}"  # after the last one read
        return self._entries(found)[0]

    @staticmethod
    def _entries(found) -> tuple[list[Entry], bool]:
        entries = [(_seq(entry_id), json.loads(fields[b"e"])) for entry_id, fields in found]
        return entries, bool(entries) and is_terminal(entries[-1][1])


@dataclass
class _Lookups:
    """The cancel flags one event loop's generations wait to read, and the task reading them in one MGET."""

    waiting: dict[str, list[asyncio.Future]] = field(default_factory=dict)
    reader: asyncio.Task | None = None


class RedisCancelFlags:
    """Cancel requests as keys that live as long as a finished log. Every running generation asks twice
    a second; the questions of one event loop that wait together are answered by one MGET, where a GET
    each (1,000 round trips a second for 500 generations) made the Redis client most of the work."""

    def __init__(self, clients: RedisClients) -> None:
        self.clients = clients
        self._lookups: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # of each event loop

    async def request(self, message_id: str) -> None:
        await self.clients.get().set(f"parley:cancel:{message_id}", time.time(), ex=settings.STREAM_LOG_TTL_SECONDS)

    async def is_requested(self, message_id: str, *, since: float = 0.0) -> bool:
        loop = asyncio.get_running_loop()
        lookups = self._lookups.get(loop)
        if lookups is None:
            lookups = self._lookups[loop] = _Lookups()
        answer = loop.create_future()
        lookups.waiting.setdefault(message_id, []).append(answer)
        if lookups.reader is None:
            lookups.reader = loop.create_task(self._read(lookups))
        requested = await answer
        return requested is not None and float(requested) >= since

    async def _read(self, lookups: _Lookups) -> None:
        waiting: dict[str, list[asyncio.Future]] = {}
        try:
            while lookups.waiting:
                waiting, lookups.waiting = lookups.waiting, {}
                try:
                    values = await self.clients.get().mget([f"parley:cancel:{message_id}" for message_id in waiting])
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


class RedisLog:
    """The stream log of every process, in Redis; the same interface as MemoryLog."""

    def __init__(self, url: str) -> None:
        self.url = url
        clients = RedisClients(url)
        # The generations running in this process, mirrored in memory for the readers here.
        mirror = MemoryLog()
        self.writer = RedisLogWriter(clients, mirror)
        self.reader = RedisLogReader(clients, mirror)
        self.cancel_flags = RedisCancelFlags(clients)

    async def append(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        await self.writer.append(message_id, seq, event)

    async def reset(self, message_id: str) -> None:
        await self.writer.reset(message_id)

    async def read(
        self, message_id: str, after: int, timeout: float, *, wait: bool = True
    ) -> tuple[list[Entry], bool] | None:
        return await self.reader.read(message_id, after, timeout, wait=wait)

    async def entries(self, message_id: str) -> list[Entry]:
        return await self.reader.entries(message_id)

    async def request_cancel(self, message_id: str) -> None:
        await self.cancel_flags.request(message_id)

    async def is_cancel_requested(self, message_id: str, *, since: float = 0.0) -> bool:
        """Whether a cancel was requested at or after `since` (a time.time(): the run's start)."""
        return await self.cancel_flags.is_requested(message_id, since=since)
