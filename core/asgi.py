"""ASGI plumbing around Django's handler."""

from __future__ import annotations

import atexit
import gc
import importlib
import itertools
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.urls import get_resolver


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


def gc_prepare_for_serving(*modules: str) -> int:
    """Import what requests would import on first use, then exempt those objects from the cyclic GC.

    A full collection walks every tracked object, and a server process holds about 200,000 of them from
    its imports alone (Django, DRF, pandas, pyarrow, DuckDB, the OpenAI SDK): each one stopped the event
    loop for 100-180 ms, stalling every open stream at once, about once a second under load. Objects
    made at start-up live as long as the process, so `gc.freeze()` moves them to a generation the
    collector never scans; what requests create is collected as before. Returns how many objects were
    frozen.
    """
    for module in modules:
        importlib.import_module(module)
    _ = get_resolver().url_patterns  # imports the URLconf, and every view and serializer module behind it
    gc.collect()
    gc.freeze()
    # At exit the frozen objects are finalised as usual (nanobind, under DuckDB, reports the ones left).
    atexit.register(gc.unfreeze)
    return gc.get_freeze_count()
