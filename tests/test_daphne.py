"""Request bodies under daphne stay on disk until Django reads them (core/daphne.py)."""

import asyncio
import ctypes
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

import core.daphne
from core.daphne import BODY_CHUNK, GIL_SEND_MAX, DirectWriteServer, SpooledBodyQueue, send_keeping_gil, with_backlog
from files.models import File
from tests.servers import BASE_DIR, daphne_server

MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


def daphne_pid(port: str) -> int:
    """The pid of the daphne child listening on `port` (the test started it; no other is on that port)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"daphne" in b" ".join(cmdline) and port.encode() in cmdline:
                return int(entry.name)
    raise LookupError(port)


@pytest.mark.django_db(transaction=True)
def test_a_large_upload_is_stored_whole_without_the_body_in_server_memory(owner, django_db_blocker, tmp_path):
    conversation = owner.conversation()
    content = os.urandom(48 * MIB)
    boundary = "parley" + secrets.token_hex(8)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body = head + content + f"\r\n--{boundary}--\r\n".encode()
    media = tmp_path / "media"
    with django_db_blocker.unblock(), daphne_server(MEDIA_ROOT=str(media), FILE_MAX_BYTES=str(64 * MIB)) as base:
        pid = daphne_pid(base.rsplit(":", 1)[1])
        url = f"{base}{owner.conversation_url(conversation)}/files"
        headers = {"Authorization": f"Bearer {owner.secret}"}
        warm = httpx.post(url, headers=headers, files={"files": ("warm.txt", b"warm")}, timeout=30)
        assert warm.status_code == 201, warm.text
        before = status_kib(pid, "VmRSS")

        response = httpx.post(
            url,
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            content=body,
            timeout=120,
        )

        peak_growth = status_kib(pid, "VmHWM") - before
    assert response.status_code == 201, response.text
    item = response.json()["items"][0]
    assert item["size"] == len(content)
    assert item["sha256"] == hashlib.sha256(content).hexdigest()
    stored = File.objects.get(id=item["file_ref"])
    assert (media / stored.storage_key).read_bytes() == content
    # daphne alone used to queue the whole 48 MiB body in memory before Django read any of it.
    assert peak_growth < 24 * 1024, f"server peak RSS grew {peak_growth} KiB for a 48 MiB upload"


def daphne_style_queue(content: bytes) -> tuple[SpooledBodyQueue, tempfile.TemporaryFile]:
    """A queue fed the way daphne's WebRequest.process feeds it: 8 KiB messages read from the file."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - the test closes it
    spool.write(content)
    spool.seek(0)
    queue = asyncio.Queue()
    SpooledBodyQueue.adopt(queue, spool)
    while True:
        chunk = spool.read(8192)
        more_body = len(chunk) == 8192
        queue.put_nowait({"type": "http.request", "body": chunk, "more_body": more_body})
        if not more_body:
            return queue, spool


async def receive_all(queue: asyncio.Queue) -> list[dict]:
    messages = []
    while not queue.empty():
        messages.append(await queue.get())
    return messages


def test_the_body_is_handed_over_whole_in_large_chunks_then_later_messages():
    content = os.urandom(3 * BODY_CHUNK + 12345)
    queue, spool = daphne_style_queue(content)
    queue.put_nowait({"type": "http.disconnect"})

    messages = asyncio.run(receive_all(queue))

    bodies = [message for message in messages if message["type"] == "http.request"]
    assert [len(message["body"]) for message in bodies] == [BODY_CHUNK] * 3 + [12345]
    assert [message["more_body"] for message in bodies] == [True, True, True, False]
    assert b"".join(message["body"] for message in bodies) == content
    assert messages[-1] == {"type": "http.disconnect"}
    spool.close()


def test_an_empty_body_is_one_final_message():
    queue, spool = daphne_style_queue(b"")

    assert asyncio.run(receive_all(queue)) == [{"type": "http.request", "body": b"", "more_body": False}]
    spool.close()


def test_a_body_whose_file_was_closed_reads_as_a_disconnect():
    queue, spool = daphne_style_queue(os.urandom(BODY_CHUNK * 2))

    async def first_then_rest():
        first = await queue.get()
        spool.close()  # what Twisted does when the client goes away
        return first, await queue.get()

    first, after_close = asyncio.run(first_then_rest())
    assert first["more_body"] is True and len(first["body"]) == BODY_CHUNK
    assert after_close == {"type": "http.disconnect"}
    assert queue.empty()


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:port=8000:interface=127.0.0.1", "tcp:port=8000:interface=127.0.0.1:backlog=700"),
        ("tcp:8000:interface=\\:\\:1", "tcp:8000:interface=\\:\\:1:backlog=700"),
        ("unix:/run/parley.sock", "unix:/run/parley.sock:backlog=700"),
        ("tcp:port=8000:backlog=64", "tcp:port=8000:backlog=64"),  # named by the operator: kept
        ("tcp:8000:127.0.0.1:64", "tcp:8000:127.0.0.1:64"),  # given by position: kept
        ("tcp:8000:127.0.0.1", "tcp:8000:127.0.0.1:backlog=700"),
        ("tcp6:8000:64", "tcp6:8000:64"),
        ("unix:/run/parley.sock:660:64", "unix:/run/parley.sock:660:64"),
        ("fd:fileno=3", "fd:fileno=3"),  # the socket's creator (systemd) set its backlog
    ],
)
def test_listening_endpoints_get_the_configured_backlog(description, expected):
    assert with_backlog(description, 700) == expected


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs iproute2's ss to read a listening socket's backlog")
@pytest.mark.django_db(transaction=True)
def test_daphne_listens_with_the_configured_backlog_not_twisteds_fifty(django_db_blocker):
    with django_db_blocker.unblock(), daphne_server(LISTEN_BACKLOG="700") as base:
        port = base.rsplit(":", 1)[1]
        listening = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
    # For a listening socket, ss's Send-Q column is the accept queue's maximum length.
    assert listening[0] == "LISTEN" and listening[2] == "700", listening


def idle_connection(sock) -> tuple[DirectWriteServer, list]:
    """A DirectWriteServer on `sock` in the state Twisted leaves an open, idle connection in; its
    reactor registration replaced by a record of the calls."""
    server = DirectWriteServer.__new__(DirectWriteServer)
    server.socket, server.connected, server.producer = sock, True, None
    server._tempDataBuffer, server._tempDataLen = [], 0
    started: list = []
    server.startWriting = lambda: started.append(True)
    return server, started


def test_a_write_to_an_idle_connection_is_sent_at_once_and_the_rest_queued_in_order():
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.setblocking(False)
        server, started = idle_connection(ours)

        server.writeSequence([b"3\r\n", b"abc", b"\r\n"])
        assert peer.recv(100) == b"3\r\nabc\r\n"
        assert not started and not server._tempDataBuffer  # nothing left for the reactor

        big = os.urandom(16 * MIB)  # more than the socket takes at once
        server.write(big)
        server.write(b"tail")  # while the rest of `big` waits, this waits behind it
        assert started and b"".join(server._tempDataBuffer).endswith(b"tail")
        sent_now = b""
        while len(sent_now) < len(big) + 4 - server._tempDataLen:
            sent_now += peer.recv(1 << 20)
        assert sent_now + b"".join(server._tempDataBuffer) == big + b"tail"


needs_libc_send = pytest.mark.skipif(
    core.daphne._send is None, reason="no libc send() or MSG_DONTWAIT here: direct sends are socket.send()"
)


@pytest.mark.django_db(transaction=True)
def test_daphnes_connections_are_direct_write_servers(django_db_blocker):
    with django_db_blocker.unblock(), daphne_server(LOG_LEVEL="INFO") as url:
        port = url.rsplit(":", 1)[1]
        log = (BASE_DIR / "var" / f"daphne-test-{port}.log").read_text()
    assert f"Connections on port {port} write at once (DirectWriteServer)" in log


@needs_libc_send
def test_a_direct_send_keeps_the_gil_where_socket_send_gives_it_away():
    """While the event loop sends, a thread running Python does not get in (the convoy effect)."""
    assert core.daphne._send._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # a PyDLL function: called holding the GIL
    ours, peer = socket.socketpair()
    spins, stop = [0], threading.Event()

    def spin() -> None:  # never releases the GIL of its own accord
        while not stop.is_set():
            spins[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)  # so the spinner runs only when this thread releases the GIL
    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        with ours, peer:
            while not spins[0]:
                time.sleep(0.001)
            before = spins[0]
            for _ in range(100):
                assert send_keeping_gil(ours, b"x" * 100) == 100
            kept = spins[0] - before
            # socket.send() on a full socket waits with the GIL released: the spinner gets in.
            with pytest.raises(BlockingIOError):
                while True:
                    send_keeping_gil(ours, b"x" * GIL_SEND_MAX)
            ours.settimeout(0.05)
            before = spins[0]
            with pytest.raises(TimeoutError):
                ours.send(b"y")
            given_away = spins[0] - before
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(interval)
    assert kept == 0 and given_away > 0


@needs_libc_send
def test_a_direct_send_never_blocks_and_reports_errors_by_their_code():
    ours, peer = socket.socketpair()
    with ours, peer:
        assert ours.getblocking()  # even so
        big = os.urandom(16 * MIB)
        assert send_keeping_gil(ours, big) <= GIL_SEND_MAX
        with pytest.raises(BlockingIOError):
            while True:
                send_keeping_gil(ours, big)
        server, started = idle_connection(ours)
        assert server._send_at_once(b"more") == b"more"  # the socket is full: all of it for the buffer
        peer.close()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            send_keeping_gil(ours, b"after close")
        # Twisted's own write then finds the connection lost.
        assert server._send_at_once(b"after close") == b"after close"


def test_writes_go_through_twisteds_buffer_under_tls_or_once_closing():
    ours, peer = socket.socketpair()
    with ours, peer:
        for state in (
            {"TLS": True},
            {"disconnecting": True},
            {"_writeDisconnecting": True},
            {"_aborting": True},
            {"connected": False},
            {"producer": object(), "streamingProducer": False},
        ):
            server, _ = idle_connection(ours)
            for name, value in state.items():
                setattr(server, name, value)
            assert server._send_at_once(b"data") == b"data", state
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(100)


def test_a_write_of_anything_but_bytes_is_refused_as_twisted_does():
    ours, peer = socket.socketpair()
    with ours, peer:
        server, _ = idle_connection(ours)
        for bad in ("text", bytearray(b"abc"), None):
            with pytest.raises(TypeError):
                server.write(bad)
            with pytest.raises(TypeError):
                server.writeSequence([b"ok", bad])
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(100)  # nothing was sent, not even the bytes before the bad item
