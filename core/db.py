"""Database connections in async code that waits a long time."""

from asgiref.sync import sync_to_async
from django.db import connection


def in_worker(function):
    """Run an ORM function on the event loop's worker threads, each of which keeps one connection.

    For work that outlives a request (a generation) or must not queue behind other requests: the
    request's own thread is gone, and Django's single shared sync thread would serialise everything.
    """

    def call(*args, **kwargs):
        if connection.errors_occurred:  # a worker's connection broke (e.g. the database restarted)
            connection.close_if_unusable_or_obsolete()
        return function(*args, **kwargs)

    return sync_to_async(call, thread_sensitive=False)


async def release_connection() -> None:
    """Before a long wait in a request (a stream, post-and-wait): close the request's connection.

    Django closes it only when the response ends, so each open stream would otherwise hold one, and a
    few hundred streams would exhaust PostgreSQL's max_connections. It is reopened if needed.
    """
    await sync_to_async(_close_this_threads_connection)()


def _close_this_threads_connection() -> None:
    # Looked up here, in the request's thread: `connection` is per thread.
    connection.close()
