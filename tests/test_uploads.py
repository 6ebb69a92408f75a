"""A large upload through the server as deployed (uvicorn): stored whole, its body never held in memory."""

import hashlib
import os
import secrets

import httpx
import psutil
import pytest

from files.models import File
from tests.servers import served_process

MIB = 1024 * 1024
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def peak_rss(pid: int) -> int:
    """The process's peak resident set since it started (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


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
    with django_db_blocker.unblock(), served_process(MEDIA_ROOT=str(media), FILE_MAX_BYTES=str(64 * MIB)) as server:
        process = psutil.Process(server.pid)
        url = f"{server.url}{owner.conversation_url(conversation)}/files"
        headers = {"Authorization": f"Bearer {owner.secret}"}
        warm = httpx.post(url, headers=headers, files={"files": ("warm.txt", b"warm")}, timeout=30)
        assert warm.status_code == 201, warm.text
        before = process.memory_info().rss
        peak = before

        def sample() -> None:
            nonlocal peak
            peak = max(peak, process.memory_info().rss)

        def chunks():
            for start in range(0, len(body), MIB):
                sample()
                yield body[start : start + MIB]

        response = httpx.post(
            url,
            headers={
                **headers,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(body)),  # streamed, not chunked: Django reads multipart by its length
            },
            content=chunks(),
            timeout=120,
        )
        sample()
        peak = max(peak, peak_rss(server.pid))
    assert response.status_code == 201, response.text
    item = response.json()["items"][0]
    assert item["size"] == len(content)
    assert item["sha256"] == hashlib.sha256(content).hexdigest()
    stored = File.objects.get(id=item["file_ref"])
    assert (media / stored.storage_key).read_bytes() == content
    assert peak - before < 24 * MIB, f"server RSS grew {(peak - before) / MIB:.1f} MiB for a 48 MiB upload"
