"""The in-process stream log: a single process's logs of its running generations, and its cancel flags."""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from turns.events import Entry, is_terminal
from turns.log.journal import Journal


def _entry_seq(entry: Entry) -> int:
    return entry[0]


def resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _Log:
    entries: list[Entry] = field(default_factory=list)  # in seq order; seqs may skip (a continued reply)

    def after(self, seq: int) -> list[Entry]:
        return self.entries[bisect.bisect_right(self.entries, seq, key=_entry_seq) :]

    waiters: list[asyncio.Future] = field(default_factory=list)


class MemoryLog:
    """A single process's logs, of running generations only: a finished one is dropped at once, since
    its stored message rebuilds it exactly. Waiters may live on other event loops (the test client
    makes one per request); those are woken with call_soon_threadsafe."""

    def __init__(self, journal: Journal | None = None) -> None:
        self._logs: dict[str, _Log] = {}
        self._cancelled: dict[str, float] = {}
        self.journal = journal  # the log of the process, not Redis's mirror: its events also go to disk

    async def append(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        self.append_now(message_id, seq, event)

    def append_now(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        """`append` from code that cannot await (it never needs to wait). A seq the log holds already is
        not added again, as in Redis."""
        log = self._logs.get(message_id)
        if log is None:  # not setdefault(): that would build a log for every event
            log = self._logs[message_id] = _Log()
        elif log.entries and seq <= log.entries[-1][0]:
            return
        if self.journal is not None:  # before any follower is woken: on disk is at least what was sent
            self.journal.append(message_id, seq, event)
        log.entries.append((seq, event))
        if is_terminal(event):
            del self._logs[message_id]
            if self.journal is not None:
                self.journal.drop(message_id)
        waiters, log.waiters = log.waiters, []
        loop = asyncio.get_running_loop()
        for waiter in waiters:
            if waiter.done():
                continue
            if waiter.get_loop() is loop:
                waiter.set_result(None)
            else:
                waiter.get_loop().call_soon_threadsafe(resolve, waiter)

    async def reset(self, message_id: str) -> None:
        """Start the message's log afresh (a new run: `continue` reuses the message id). Cancel requests
        stay: one made since the run started is for it (see is_cancel_requested)."""
        self.drop(message_id)

    def drop(self, message_id: str) -> None:
        """Forget the message's log; its readers wake and find none."""
        if self.journal is not None:
            self.journal.drop(message_id)
        log = self._logs.pop(message_id, None)
        for waiter in log.waiters if log is not None else []:
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(resolve, waiter)

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
        timer = loop.call_later(timeout, resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in log.waiters:
                log.waiters.remove(waiter)
        entries = log.after(after)  # none after the timeout
        return entries, bool(entries) and is_terminal(entries[-1][1])

    async def entries(self, message_id: str) -> list[Entry]:
        """Every entry of the message's live log here (none when it has none); with a journal, also of a
        reply whose process died (this one, before its restart)."""
        log = self._logs.get(message_id)
        if log is not None:
            return list(log.entries)
        return self.journal.entries(message_id) if self.journal is not None else []

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
