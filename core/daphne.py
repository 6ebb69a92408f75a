"""Two corrections to how daphne hands a request body to the application, so that an upload's bytes
stay on disk until Django copies them to its own spool.

`install()` is called by config/asgi.py. It patches daphne's classes wherever daphne is imported, which is
in every process of this project ("daphne" is an installed app, for its runserver); only a daphne server
ever calls what it patches.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from dataclasses import dataclass
from typing import IO

# The size of the body messages the application receives: larger than daphne's 8 KiB, so that a
# 200 MiB upload is 800 messages, not 25,600.
BODY_CHUNK = 256 * 1024


@dataclass
class _PendingBody:
    """Bytes of the body not yet handed to the application, still in the request's content file."""

    size: int
    more_body: bool


class SpooledBodyQueue(asyncio.Queue):
    """The input queue of one HTTP request that keeps the body in Twisted's content file.

    daphne reads the whole body out of that file (a temporary file past 100 kB) into the application's
    queue as soon as the request ends (django/daphne#483), so a 200 MiB upload sat in memory until Django
    had copied it. Here the body messages daphne queues keep only their size, and `_get` reads the
    bytes when the application asks for them. Only `_put` and `_get` are overridden, the hooks
    asyncio's own LifoQueue and PriorityQueue use; `qsize()` counts a pending body as one entry, and
    nothing here uses `task_done()`/`join()`.
    """

    _content: IO[bytes]
    _offset: int

    @classmethod
    def adopt(cls, queue: asyncio.Queue, content: IO[bytes]) -> None:
        # daphne creates the queue and hands its `get` to the application in the same call, so the
        # queue is converted in place: `Queue.get` looks `_get` up on the instance when it runs.
        queue.__class__ = cls
        queue._content, queue._offset = content, 0

    def _put(self, message):
        if message.get("type") != "http.request":
            return super()._put(message)
        size = len(message.get("body", b""))
        more_body = message.get("more_body", False)
        last = self._queue[-1] if self._queue else None
        if isinstance(last, _PendingBody):
            last.size += size
            last.more_body = more_body
        else:
            self._queue.append(_PendingBody(size=size, more_body=more_body))

    def _get(self):
        pending = self._queue[0]
        if not isinstance(pending, _PendingBody):
            return self._queue.popleft()
        try:
            self._content.seek(self._offset)
            body = self._content.read(min(pending.size, BODY_CHUNK))
        except ValueError:
            # Twisted closes the content file when the client goes away (daphne queues the disconnect
            # first) or once the response is finished: the rest of the body is gone with it.
            self._queue.popleft()
            return {"type": "http.disconnect"}
        self._offset += len(body)
        pending.size -= len(body)
        if pending.size > 0 and body:
            return {"type": "http.request", "body": body, "more_body": True}
        self._queue.popleft()
        return {"type": "http.request", "body": body, "more_body": pending.more_body}


def install() -> None:
    """Patch daphne's server and request classes when daphne is running (imported) in this process."""
    server_module = sys.modules.get("daphne.server")
    http_module = sys.modules.get("daphne.http_protocol")
    if server_module is None or http_module is None:
        return

    # Twisted parses every multipart POST body with the email package before daphne sees the request:
    # the whole upload in memory, about 13 times over (a 200 MiB upload took 2.6 GiB). Daphne never
    # reads what that parse produces, and Twisted has a per-request switch for it that daphne does not
    # expose: pin it off.
    http_module.WebRequest._parsePOSTFormSubmission = property(lambda request: False, lambda *_: None)

    create_application = server_module.Server.create_application
    if getattr(create_application, "spools_body", False):
        return

    @functools.wraps(create_application)
    def create_application_spooling_body(server, protocol, scope):
        queue = create_application(server, protocol, scope)
        if queue is not None and scope["type"] == "http":
            SpooledBodyQueue.adopt(queue, protocol.content)
        return queue

    create_application_spooling_body.spools_body = True
    server_module.Server.create_application = create_application_spooling_body
