"""What runs inside every server process beside the requests: periodic upkeep (no cron needed for
correctness), and the drain when the process is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time

from django.conf import settings
from django.utils import timezone

from agents.engines.openai import openai_clients_close
from core.db import in_worker
from core.drain import drain_begin, drain_handed_over, draining
from core.idempotency import idempotency_purge_expired
from core.tenancy import scoped_context
from tenants.webhooks import webhook_deliveries_purge
from turns.runtime import (
    conversations_with_queue_waiting,
    generations_drain,
    queued_turns_advance,
    stale_replies_take_over,
)
from turns.services import conversations_purge_expired
from turns.webhooks import webhooks_send_forever

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RETENTION_BATCHES_PER_SWEEP = 5
STARTED_AT = timezone.now()  # this process's start (the module is loaded with the application)


def sweep_seconds() -> float:
    """A quarter of GENERATION_STALE_SECONDS: a dead process's replies are taken over within 1.25 times it."""
    return max(1.0, settings.GENERATION_STALE_SECONDS / 4)


async def maintenance_forever() -> None:
    """At start-up and then every sweep_seconds(): take over (or fail) the replies whose process died,
    drop expired idempotency keys; every RETENTION_PURGE_SECONDS, delete conversations past their
    retention. Several processes may do it at once: a reply is claimed by one, a conversation deleted once.
    A draining process takes nothing over (it would have to hand it over again).

    Without Redis this is the only process (DESIGN, section 8), so a running reply with no sign of life
    since it started is a previous run's: those are taken over at once, not once their heartbeat is stale."""
    alive_since = None if settings.REDIS_URL else STARTED_AT
    purged_at: float | None = None  # (monotonic time starts near 0 on a new machine: no "long ago" value)
    while not draining():
        try:
            failed, continued = await stale_replies_take_over(alive_since=alive_since)
            for conversation_id in await in_worker(conversations_with_queue_waiting)():
                try:  # (a process died between a reply's end and them)
                    await queued_turns_advance(conversation_id)
                except Exception:  # one conversation's must not stop the rest of the upkeep
                    logger.exception("Starting the queued turns of %s failed", conversation_id)
            await in_worker(idempotency_purge_expired)()
            if purged_at is None or time.monotonic() - purged_at >= settings.RETENTION_PURGE_SECONDS:
                purged_at = time.monotonic()
                # A few batches a time: the rest goes on at the next sweeps, the replies' takeover first.
                if deleted := await in_worker(conversations_purge_expired)(batches_max=RETENTION_BATCHES_PER_SWEEP):
                    logger.info("Retention: %d expired conversations deleted", deleted)
                    purged_at = None  # (more may be left: again at the next sweep)
                if await in_worker(webhook_deliveries_purge)():
                    purged_at = None
            if failed or continued:
                logger.warning("Replies of stopped processes: %d continued here, %d failed", continued, failed)
        except Exception:  # the database may be briefly unreachable: try again next time
            logger.exception("Maintenance failed")
        await asyncio.sleep(sweep_seconds())


async def drain() -> None:
    """Stop taking work (see core.drain), let the running generations go on for up to DRAIN_SECONDS, then
    hand the rest over; open streams end with an instruction to reconnect (turns.apis)."""
    drain_begin()
    logger.warning("Draining: running replies have %g s to finish", settings.DRAIN_SECONDS)
    handed = await generations_drain(seconds=settings.DRAIN_SECONDS)
    drain_handed_over()
    if handed:
        logger.warning("Handed %d running replies over to the other processes", handed)


class MaintainedApplication:
    """An ASGI wrapper that runs `maintenance_forever` beside the application: from the server's lifespan
    start-up (uvicorn), or from the first request where the server sends no lifespan events (daphne's
    runserver). On SIGTERM or SIGINT it drains (the server's own handler runs too: uvicorn stops listening
    and waits for the open connections, which the drain ends); at the lifespan's shutdown whatever still
    runs is handed over, maintenance stops and the engines' HTTP clients are closed."""

    def __init__(self, application) -> None:
        self.application = application
        self.task: asyncio.Task | None = None
        self.webhooks: asyncio.Task | None = None
        self.draining: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        if self.task is None and scope["type"] == "http":
            self.start()
        return await self.application(scope, receive, send)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(maintenance_forever(), name="maintenance")
        self.webhooks = loop.create_task(webhooks_send_forever(), name="webhooks", context=scoped_context(None))

    def drain_soon(self) -> None:
        if self.draining is None:
            self.draining = asyncio.get_running_loop().create_task(drain(), name="drain")

    def drain_on_signals(self) -> None:
        """Chain a drain before the server's own handler of the stop signals (the signal module's documented
        way: the previous handler is kept and called). Only in the main thread, where the server's is."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for number in STOP_SIGNALS:
            previous = signal.getsignal(number)
            if not callable(previous):  # no server handler to chain (the default ends the process at once)
                continue

            def handler(signum, frame, previous=previous):
                loop.call_soon_threadsafe(self.drain_soon)
                previous(signum, frame)

            signal.signal(number, handler)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                self.drain_on_signals()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if not draining():  # stopped without a signal: nothing is left running, but handed over
                    await generations_drain(seconds=0)
                elif self.draining is not None:
                    await self.draining
                for task in (self.task, self.webhooks):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await openai_clients_close()
                await send({"type": "lifespan.shutdown.complete"})
                return
