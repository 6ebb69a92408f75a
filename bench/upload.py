"""Upload one large file to a daphne server started here; print the server's RSS growth and the upload
throughput next to copying the same bytes on disk.

    DATABASE_URL=postgres://... .venv/bin/python bench/upload.py [--mib 200]

Needs a migrated database (DATABASE_URL); creates a throwaway tenant and removes it afterwards.
Goal: RSS growth of the server at most 64 MiB for a 200 MiB upload.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
MIB = 1024 * 1024


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart_stream(path: Path, boundary: str, chunk: int = MIB):
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        with path.open("rb") as stream:
            while block := stream.read(chunk):
                yield block
        yield tail

    return body(), len(head) + path.stat().st_size + len(tail)


class PeakSampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0, True
        self.breakdown = ""

    def run(self):
        while self.running:
            rss = rss_bytes(self.pid)
            if rss > self.peak:
                self.peak = rss
                self.breakdown = ", ".join(
                    f"{f} {rss_bytes(self.pid, f) / MIB:.0f} MiB" for f in ("RssAnon", "RssFile", "RssShmem")
                )
            time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL to a migrated PostgreSQL database.")

    import django

    django.setup()
    from agents.models import Agent
    from conversations.models import Conversation
    from tenants.services import api_key_create, tenant_create

    tenant = tenant_create(tenant_id=f"bench-upload-{secrets.token_hex(4)}")
    _, secret = api_key_create(tenant=tenant, name="bench")
    agent = Agent.objects.create(tenant=tenant, name="bench")
    conversation = Conversation.objects.create(tenant=tenant, agent=agent, name="bench")
    url_path = f"/tenants/{tenant.id}/api/v2/agents/{agent.id}/conversations/{conversation.id}/files"

    work = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    source = work / "upload.bin"
    with source.open("wb") as out:
        for _ in range(args.mib):
            out.write(os.urandom(MIB))
    size = source.stat().st_size

    started = time.perf_counter()
    shutil.copyfile(source, work / "copy.bin")
    copy_seconds = time.perf_counter() - started
    (work / "copy.bin").unlink()

    port = free_port()
    env = {
        **os.environ,
        "MEDIA_ROOT": str(work / "media"),
        "FILE_UPLOAD_TEMP_DIR": str(work),
        "FILE_MAX_BYTES": str(size + MIB),
        "THROTTLE_RATE": "100000/min",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "--bind", "127.0.0.1", "--port", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            sys.exit("daphne did not start")
        # Warm up: load every module an upload touches, so that the baseline includes them.
        warm = httpx.post(f"{base}{url_path}", headers=headers, files={"files": ("warm.txt", b"warm up")}, timeout=30)
        assert warm.status_code == 201, warm.text
        time.sleep(0.5)
        baseline = rss_bytes(server.pid)

        sampler = PeakSampler(server.pid)
        sampler.start()
        boundary = "bench" + secrets.token_hex(8)
        body, length = multipart_stream(source, boundary)
        started = time.perf_counter()
        response = httpx.post(
            f"{base}{url_path}",
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}",
                     "Content-Length": str(length)},
            content=body,
            timeout=600,
        )  # fmt: skip
        upload_seconds = time.perf_counter() - started
        time.sleep(0.3)
        sampler.running = False
        sampler.join()
        after = rss_bytes(server.pid)
        assert response.status_code == 201, response.text[:500]
        item = response.json()["items"][0]
        assert item["size"] == size
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        tenant.delete()  # rows; the stored bytes live under `work`
        shutil.rmtree(work, ignore_errors=True)

    growth = sampler.peak - baseline
    print(f"file                {size / MIB:.0f} MiB")
    print(f"server RSS          baseline {baseline / MIB:.1f} MiB, peak {sampler.peak / MIB:.1f} MiB, "
          f"after {after / MIB:.1f} MiB; at the peak: {sampler.breakdown}")  # fmt: skip
    print(f"server RSS growth   {growth / MIB:.1f} MiB (goal <= 64 MiB: {'met' if growth <= 64 * MIB else 'NOT met'})")
    print(f"upload              {upload_seconds:.2f} s, {size / MIB / upload_seconds:.1f} MiB/s")
    print(f"disk copy           {copy_seconds:.2f} s, {size / MIB / copy_seconds:.1f} MiB/s")
    print(f"upload / copy       {upload_seconds / copy_seconds:.1f}x the time of a disk copy")


if __name__ == "__main__":
    main()
