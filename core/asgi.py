"""ASGI plumbing around Django's handler."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext


class SharedSyncThreads:
    """Run every request's sync code (authentication, DRF views, ORM calls) on one of `size` shared
    threads, instead of a thread per request that Django keeps until the response ends: waiting
    requests and open streams hold no thread, and the thread count stays bounded under any load.

    Each thread runs one call at a time, and a call is always a whole unit of work (Django's async
    ORM and sync_to_async never span a transaction across calls), so requests sharing a thread and its
    connection do not see each other's state.
    """

    def __init__(self, application, *, size: int) -> None:
        self.application = application
        self.executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sync-{n}") for n in range(size)]
        self.turn = itertools.cycle(self.executors)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.application(scope, receive, send)
        async with ThreadSensitiveContext(executor=next(self.turn)):
            return await self.application(scope, receive, send)
