"""Database connections and threads in async code that waits a long time."""

from asgiref.sync import sync_to_async
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
