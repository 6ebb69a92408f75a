"""Request bodies under daphne stay on disk until Django reads them (core/daphne.py)."""

import asyncio
import hashlib
import os
import secrets
import tempfile
from pathlib import Path

import httpx
import pytest

from core.daphne import BODY_CHUNK, SpooledBodyQueue
from files.models import File
from tests.servers import daphne_server

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
