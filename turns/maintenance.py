"""Periodic upkeep run inside every server process: no cron needed for correctness."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from django.conf import settings

from agents.engines.openai import openai_clients_close
from core.db import in_worker
from core.idempotency import idempotency_purge_expired
from turns.services import message_sweep_stale

logger = logging.getLogger(__name__)


async def maintenance_forever() -> None:
    """At start-up and then every half GENERATION_STALE_SECONDS: fail replies whose process died, drop
    expired idempotency keys. Several processes may do it at once; both are idempotent updates."""
    while True:
        try:
            swept = await in_worker(message_sweep_stale)()
            await in_worker(idempotency_purge_expired)()
            if swept:
                logger.warning("Marked %d stale generation(s) failed", swept)
        except Exception:  # the database may be briefly unreachable: try again next time
            logger.exception("Maintenance failed")
        await asyncio.sleep(max(1.0, settings.GENERATION_STALE_SECONDS / 2))


class MaintainedApplication:
    """An ASGI wrapper that runs `maintenance_forever` beside the application: from the server's lifespan
    start-up (uvicorn), or from the first request where the server sends no lifespan events (daphne's
    runserver); at the lifespan's shutdown it is stopped and the engines' HTTP clients are closed."""

    def __init__(self, application) -> None:
        self.application = application
        self.task: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.lifespan(receive, send)
        if self.task is None and scope["type"] == "http":
            self.start()
        return await self.application(scope, receive, send)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(maintenance_forever(), name="maintenance")

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.task is not None:
                    self.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.task
                await openai_clients_close()
                await send({"type": "lifespan.shutdown.complete"})
                return
