"""The ASGI plumbing around Django: requests' sync code on a bounded set of shared threads, and the
process's maintenance started and stopped with the server's lifespan."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async

from core.asgi import SharedSyncThreads
from tests.conftest import await_until
from turns.maintenance import MaintainedApplication


async def run_sync(scope, receive, send):
    """A stand-in for Django's handler: the request's sync code, thread-sensitive as Django runs it."""
    scope["result"] = await sync_to_async(scope["work"])()


async def request(application, work):
    scope = {"type": "http", "work": work}
    await application(scope, None, None)
    return scope["result"]


async def test_requests_sync_code_runs_on_at_most_size_threads():
    application = SharedSyncThreads(run_sync, size=3)
    idents = await asyncio.gather(*(request(application, threading.get_ident) for _ in range(50)))
    assert 1 <= len(set(idents)) <= 3
    assert threading.get_ident() not in idents


async def test_a_slow_sync_view_does_not_hold_up_other_requests():
    application = SharedSyncThreads(run_sync, size=2)
    started, release = threading.Event(), threading.Event()

    def slow_view():
        started.set()
        return release.wait(10)

    slow = asyncio.ensure_future(request(application, slow_view))
    assert await asyncio.to_thread(started.wait, 5)  # the slow request runs on its thread
    try:
        # Each quick request gets the idle thread, not a place in the queue behind the slow one.
        for _ in range(5):
            assert await asyncio.wait_for(request(application, lambda: "quick"), timeout=2) == "quick"
        assert not slow.done()
    finally:
        release.set()
    assert await slow is True


@pytest.mark.django_db(transaction=True)
async def test_maintenance_runs_from_the_lifespan_startup_to_its_shutdown():
    async def never_called(scope, receive, send):
        raise AssertionError("lifespan events are not the application's")

    application = MaintainedApplication(never_called)
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    lifespan = asyncio.ensure_future(application({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await await_until(lambda: sent, timeout=5, what="the lifespan's startup answer")
    assert sent == [{"type": "lifespan.startup.complete"}]
    maintenance = application.task
    assert maintenance is not None and not maintenance.done()

    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, timeout=5)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"}
    assert maintenance.cancelled()
