"""Corrections to daphne: how it hands a request body to the application, so that an upload's bytes
stay on disk until Django copies them to its own spool; the backlog of the sockets it listens on; and
how a response's writes reach the socket.

`install()` is called by config/asgi.py. It patches daphne's classes wherever daphne is imported, which is
in every process of this project ("daphne" is an installed app, for its runserver); only a daphne server
ever calls what it patches.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import logging
import os
import re
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from twisted.internet import abstract, tcp

logger = logging.getLogger(__name__)

# The size of the body messages the application receives: larger than daphne's 8 KiB, so that a
# 200 MiB upload is 800 messages, not 25,600.
BODY_CHUNK = 256 * 1024

# Endpoint kinds whose Twisted parser takes a `backlog` (default 50), with the position of `backlog`
# among its positional arguments (tcp:PORT:INTERFACE:BACKLOG), and the separator of an endpoint
# description's fields (a colon not escaped with a backslash).
_BACKLOG_ENDPOINTS = {"tcp": 2, "tcp6": 1, "unix": 2, "ssl": 5}
_ENDPOINT_FIELD = re.compile(r"(?<!\\):")
_NAMED_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


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


# The most a direct send hands the kernel while holding the GIL (a memory copy of 256 KiB: microseconds).
GIL_SEND_MAX = 256 * 1024


def _libc_send():
    """libc's send(), called through ctypes.PyDLL: unlike socket.send(), it keeps the GIL."""
    if not hasattr(socket, "MSG_DONTWAIT"):  # without it a send on a blocking socket could block
        return None
    try:
        send = ctypes.PyDLL(None, use_errno=True).send
    except (OSError, AttributeError, TypeError):  # no C library to find it in (not Linux or macOS)
        return None
    send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
    send.restype = ctypes.c_ssize_t
    return send


_send = _libc_send()
# Never blocks, whatever the socket's mode; an error code, never a signal, for a closed peer.
_SEND_FLAGS = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)


def send_keeping_gil(sock: socket.socket, data: bytes) -> int:
    """Send what a non-blocking socket takes of `data` now, without letting other threads run meanwhile.

    socket.send() releases the GIL around the system call, as every call that may block must. On the
    event loop that hands the GIL to any thread waiting for it, and the loop then waits for it back:
    up to the switch interval (5 ms) behind a thread running Python, the ORM work of a turn starting,
    say, and longer behind several. That is CPython's convoy effect (python/cpython#52194): with
    turns starting on the worker threads, the loop got through about 2,000 sends a second, fewer
    than 500 open streams need, and their events came late and in bunches (p99 of the added gap
    120-340 ms; 20-40 ms with this). A send that cannot block (MSG_DONTWAIT) copies at most GIL_SEND_MAX
    bytes into the kernel, so it keeps the GIL, and the loop keeps going.

    Where libc's send() or MSG_DONTWAIT is not to be had, this is socket.send(): on Twisted's sockets,
    which are non-blocking, it does not block either, but it releases the GIL and sends all it can.
    """
    if _send is None:
        return sock.send(data)
    sent = _send(sock.fileno(), data, min(len(data), GIL_SEND_MAX), _SEND_FLAGS)
    if sent < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))  # InterruptedError, BlockingIOError, ... by the code
    return sent


class DirectWriteServer(tcp.Server):
    """A TCP connection that sends a write at once when nothing is waiting to be sent.

    Twisted queues every write and sends it on a later turn of the reactor: for each write it registers
    the socket for writability with epoll, waits for the event, sends, and unregisters (two epoll_ctl
    calls and a dispatch through Twisted's logging context). A server-sent event is one small write,
    so that was most of the cost of delivering it to 500 open streams. Like asyncio's own transports,
    this tries `send()` first while the buffer is empty; whatever the socket does not take, and every
    write while something is queued (or under TLS, or while closing), goes through Twisted's buffer as
    before, so the order of the bytes and Twisted's flow control are unchanged. The send keeps the GIL
    (see send_keeping_gil).
    """

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            return super().write(data)  # Twisted's TypeError
        rest = self._send_at_once(data)
        if rest:
            super().write(rest)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        iovec = list(iovec)
        if self._idle() and all(isinstance(item, bytes) for item in iovec):
            rest = self._send_at_once(b"".join(iovec))
            if rest:
                super().write(rest)
        else:
            super().writeSequence(iovec)

    def _idle(self) -> bool:
        return (
            not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnecting
            and not self._writeDisconnected
            and not self._aborting
            # A pull producer is asked for more by Twisted's write loop, which a direct send skips.
            and (self.producer is None or self.streamingProducer)
            and not self._tempDataBuffer
            and self.offset >= len(self.dataBuffer)
        )

    def _send_at_once(self, data: bytes) -> bytes:
        """Send what the socket takes now, if nothing is queued; the bytes left to queue."""
        if not data or not self._idle():
            return data
        try:
            sent = send_keeping_gil(self.socket, data)
        except InterruptedError:
            sent = 0
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.ENOBUFS):
                return data  # Twisted's own write finds the connection lost and closes it as usual
            sent = 0
        return data[sent:]


# Twisted's connection attributes that DirectWriteServer reads: checked when it is installed.
_WRITE_STATE = (
    "TLS",
    "connected",
    "disconnecting",
    "_writeDisconnecting",
    "_writeDisconnected",
    "_aborting",
    "streamingProducer",
    "dataBuffer",
    "offset",
)


def with_backlog(description: str, backlog: int) -> str:
    """A Twisted server endpoint description with `backlog` added, unless it gives one (by name, or by
    position: `tcp:8000:127.0.0.1:64`) or its kind has none.

    daphne builds `tcp:port=8000:interface=127.0.0.1` from `--bind`/`--port`, and Twisted then listens
    with a backlog of 50: a burst of new connections larger than that (200 clients at once, or nginx
    opening connections after a restart) overflows the accept queue, and the kernel drops them; clients
    see a one-second SYN retry or a reset.
    """
    kind, *fields = _ENDPOINT_FIELD.split(description)
    if kind not in _BACKLOG_ENDPOINTS:
        return description
    positional = [field for field in fields if not _NAMED_FIELD.match(field)]
    if len(positional) > _BACKLOG_ENDPOINTS[kind] or any(field.startswith("backlog=") for field in fields):
        return description  # the operator's own backlog
    return f"{description}:backlog={backlog}"


def install() -> None:
    """Patch daphne's server and request classes when daphne is running (imported) in this process."""
    server_module = sys.modules.get("daphne.server")
    http_module = sys.modules.get("daphne.http_protocol")
    if server_module is None or http_module is None:
        return

    server_from_string = server_module.serverFromString
    if not getattr(server_from_string, "sets_backlog", False):
        from django.conf import settings

        @functools.wraps(server_from_string)
        def server_from_string_with_backlog(reactor, description):
            return server_from_string(reactor, with_backlog(description, settings.LISTEN_BACKLOG))

        server_from_string_with_backlog.sets_backlog = True
        server_module.serverFromString = server_from_string_with_backlog

    # Twisted parses every multipart POST body with the email package before daphne sees the request:
    # the whole upload in memory, about 13 times over (a 200 MiB upload took 2.6 GiB). Daphne never
    # reads what that parse produces, and Twisted has a per-request switch for it that daphne does not
    # expose: pin it off.
    http_module.WebRequest._parsePOSTFormSubmission = property(lambda request: False, lambda *_: None)

    listen_success = server_module.Server.listen_success
    if not getattr(listen_success, "writes_at_once", False) and all(
        hasattr(abstract.FileDescriptor, name) or hasattr(tcp.Server, name) for name in _WRITE_STATE
    ):

        @functools.wraps(listen_success)
        def listen_success_writing_at_once(server, port):
            # Before the reactor runs: every connection the port accepts gets the class.
            if type(port) is tcp.Port and port.transport is tcp.Server:
                port.transport = DirectWriteServer
                logger.info("Connections on port %s write at once (DirectWriteServer)", port.port)
            return listen_success(server, port)

        listen_success_writing_at_once.writes_at_once = True
        server_module.Server.listen_success = listen_success_writing_at_once

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
