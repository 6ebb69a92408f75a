"""ASGI plumbing around Django's handler."""

from __future__ import annotations

import atexit
import gc
import importlib
import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from channels.auth import AuthMiddlewareStack
from channels.security.websocket import OriginValidator
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.urls import get_resolver


class _SyncThread(ThreadPoolExecutor):
    """One thread, counting the calls it has been given and not finished."""

    def __init__(self, name: str) -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self.pending = 0
        self._count = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._count:
            self.pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._count:
            self.pending -= 1


class SharedSyncThreads:
    """Run every request's sync code (authentication, DRF views, ORM calls) on one of `size` shared
    threads (asgiref's ThreadSensitiveContext with an executor), instead of a thread per request that
    Django keeps, with its database connection, until the response ends: waiting requests and open
    streams hold no thread, and the thread count stays bounded under any load.

    A request gets the thread with the fewest calls waiting, so a slow sync view delays others only once
    every thread is busy. Each thread runs one call at a time, and a call is a whole unit of work (Django's
    async ORM and sync_to_async never span a transaction across calls), so requests sharing a thread and
    its connection do not see each other's state.
    """

    def __init__(self, application, *, size: int) -> None:
        self.application = application
        self.threads = [_SyncThread(f"sync-{n}") for n in range(size)]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.application(scope, receive, send)
        thread = min(self.threads, key=lambda candidate: candidate.pending)
        async with ThreadSensitiveContext(executor=thread):
            return await self.application(scope, receive, send)


def gc_prepare_for_serving(*modules: str) -> int:
    """Import what requests would import on first use, then exempt those objects from the cyclic GC.

    A full collection walks every tracked object, and a server process holds about 200,000 of them from
    its imports alone (Django, DRF, pandas, pyarrow, DuckDB, the OpenAI SDK): each one stopped the event
    loop for 100-180 ms, stalling every open stream at once. Objects made at start-up live as long as the
    process, so `gc.freeze()` moves them to a generation the collector never scans; what requests create
    is collected as before. Returns how many objects were frozen.
    """
    for module in modules:
        importlib.import_module(module)
    _ = get_resolver().url_patterns  # imports the URLconf, and every view and serializer module behind it
    gc.collect()
    gc.freeze()
    # At exit the frozen objects are finalised as usual (nanobind, under DuckDB, reports the ones left).
    atexit.register(gc.unfreeze)
    return gc.get_freeze_count()


class BrowserOriginValidator(OriginValidator):
    """Channels' origin check for WebSocket handshakes, for the clients that send an Origin: browsers,
    whose pages may be another site's. A server client (no Origin header) authenticates with its key."""

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)


def handshake_request(scope: dict, *, csrf_token: str) -> HttpRequest:
    """A WebSocket handshake as the POST Django would check for CSRF: its headers (Host, Origin, the
    cookies), its scheme (wss: https), and `csrf_token` as the X-CSRFToken header a page's script sends."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    request = ASGIRequest({**scope, "type": "http", "method": "POST", "scheme": scheme}, io.BytesIO())
    request.META["HTTP_X_CSRFTOKEN"] = csrf_token
    return request


class SessionsOfBrowsers:
    """Channels' AuthMiddlewareStack (`scope["user"]` from the session cookie) for the WebSocket handshakes
    that bring a cookie and neither `Authorization` nor `?ticket=`: the admin playground's. API clients
    skip the session lookup (a thread hop and a query for each handshake)."""

    def __init__(self, application) -> None:
        self.application = application
        self.with_session = AuthMiddlewareStack(application)

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", ()))
        keyless = b"authorization" not in headers and b"ticket=" not in scope.get("query_string", b"")
        if keyless and b"cookie" in headers:
            return await self.with_session(scope, receive, send)
        return await self.application(scope, receive, send)
