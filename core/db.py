"""Database connections and threads in async code that waits a long time."""

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connection


def in_worker(function):
    """Run an ORM function on the event loop's worker threads, each of which keeps one connection.

    For work that outlives a request (a generation) or must not queue behind other requests: the
    request's own thread is gone, and Django's single shared sync thread would serialise everything.
    The pool has min(32, CPUs + 4) threads; each keeps its connection (mind DB_POOL_MAX_SIZE).
    """

    def call(*args, **kwargs):
        if connection.errors_occurred:  # a worker's connection broke (e.g. the database restarted)
            connection.close_if_unusable_or_obsolete()
        return function(*args, **kwargs)

    return sync_to_async(call, thread_sensitive=False)


async def release_request_thread() -> None:
    """Before a long wait in a request (a stream, post-and-wait): give back its connection and thread.

    Under plain Django ASGI each request runs its sync code (auth, ORM) on a thread of its own, with its
    own connection, and Django ends both only when the response ends: every open stream would hold a
    thread and a PostgreSQL connection, and a few hundred would exhaust max_connections. Then the
    connection is closed (back to the pool, if any) and the thread's executor shut down; the next sync
    call of the request, if any, gets a new one.

    Under core.asgi.SharedSyncThreads there is nothing to give back: the thread and its connection
    serve every request routed to it, whatever this one waits for.
    """
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is not None and getattr(context, "_executor", None) is not None:
        return
    await sync_to_async(_close_this_threads_connection)()
    # asgiref made a single-thread executor for this request context (e.g. the test client's), kept
    # in this class attribute.
    if context is not None:
        executor = SyncToAsync.context_to_thread_executor.pop(context, None)
        if executor is not None:
            executor.shutdown(wait=False)


def _close_this_threads_connection() -> None:
    # Looked up here, in the request's thread: `connection` is per thread.
    connection.close()
