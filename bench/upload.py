"""Upload one large file to a server started here (daphne or uvicorn); print the server's RSS growth and
the upload throughput next to copying the same bytes on disk (the bare reference, timed just before).

    DATABASE_URL=postgres://... .venv/bin/python bench/upload.py [--mib 200] [--server daphne|uvicorn|both --rounds N]

Needs a migrated database (DATABASE_URL); creates a throwaway tenant per run and removes it afterwards.
Goal: RSS growth of the server at most 64 MiB for a 200 MiB upload.
With `--server both` it runs daphne and uvicorn in turn (`--rounds` times each, interleaved), each with a
fresh server process, and ends with one table of both (with the server's CPU time and the load average at
the start and end of each run).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
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

from bench.compare import Run, add_server_arguments, load_text, run_all  # noqa: E402
from tests.servers import serve  # noqa: E402


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


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
        self.breakdown, self.parts = "", ""

    def run(self):
        while self.running:
            rss = rss_bytes(self.pid)
            if rss > self.peak:
                self.peak = rss
                parts = [rss_bytes(self.pid, f) / MIB for f in ("RssAnon", "RssFile", "RssShmem")]
                self.breakdown = ", ".join(
                    f"{f} {size:.0f} MiB" for f, size in zip(("RssAnon", "RssFile", "RssShmem"), parts, strict=True)
                )
                self.parts = "/".join(f"{size:.0f}" for size in parts) + " MiB"
            time.sleep(0.01)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process so far (/proc/<pid>/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=200)
    add_server_arguments(parser)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL to a migrated PostgreSQL database.")

    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request under Django's logging
    from django.db import connection

    from agents.models import Agent
    from conversations.models import Conversation
    from tenants.services import api_key_create, tenant_create

    work = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    source = work / "upload.bin"
    with source.open("wb") as out:
        for _ in range(args.mib):
            out.write(os.urandom(MIB))
    size = source.stat().st_size
    print(f"{args.mib} MiB of random bytes in {source}; {os.cpu_count()} CPUs, load average {load_text()}")

    def one_run(server: str, run: Run) -> None:
        tenant = tenant_create(tenant_id=f"bench-upload-{secrets.token_hex(4)}")
        _, secret = api_key_create(tenant=tenant, name="bench")
        agent = Agent.objects.create(tenant=tenant, name="bench")
        conversation = Conversation.objects.create(tenant=tenant, agent=agent, name="bench")
        url_path = f"/tenants/{tenant.id}/api/v2/agents/{agent.id}/conversations/{conversation.id}/files"
        connection.close()
        media = work / f"media-{server}-{run.round}"
        try:
            started = time.perf_counter()
            shutil.copyfile(source, work / "copy.bin")
            copy_seconds = time.perf_counter() - started
            (work / "copy.bin").unlink()

            env = {
                "MEDIA_ROOT": str(media),
                "FILE_UPLOAD_TEMP_DIR": str(work),
                "FILE_MAX_BYTES": str(size + MIB),
                "THROTTLE_RATE": "100000/min",
            }
            with serve(server, env=env, log_path=work / f"{server}-{run.round}.log") as running:
                print(f"{server} (one process, pid {running.pid}) on 127.0.0.1:{running.port}, log {running.log_path}")
                base, headers = running.url, {"Authorization": f"Bearer {secret}"}
                # Warm up: load every module an upload touches, so that the baseline includes them.
                warm = httpx.post(
                    f"{base}{url_path}", headers=headers, files={"files": ("warm.txt", b"warm up")}, timeout=30
                )
                assert warm.status_code == 201, warm.text
                time.sleep(0.5)
                baseline = rss_bytes(running.pid)
                cpu_before = cpu_seconds(running.pid)

                sampler = PeakSampler(running.pid)
                sampler.start()
                boundary = "bench" + secrets.token_hex(8)
                body, length = multipart_stream(source, boundary)
                started = time.perf_counter()
                try:
                    response = httpx.post(
                        f"{base}{url_path}",
                        headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}",
                                 "Content-Length": str(length)},
                        content=body,
                        timeout=600,
                    )  # fmt: skip
                    upload_seconds = time.perf_counter() - started
                    time.sleep(0.3)
                finally:
                    sampler.running = False
                    sampler.join()
                after = rss_bytes(running.pid)
                upload_cpu = cpu_seconds(running.pid) - cpu_before
                run_cpu = cpu_seconds(running.pid)
                assert response.status_code == 201, response.text[:500]
                item = response.json()["items"][0]
                assert item["size"] == size
        finally:
            tenant.delete()  # rows; the stored bytes live under `work`
            shutil.rmtree(media, ignore_errors=True)

        growth = sampler.peak - baseline
        print(f"file                {size / MIB:.0f} MiB")
        print(f"server RSS          baseline {baseline / MIB:.1f} MiB, peak {sampler.peak / MIB:.1f} MiB, "
              f"after {after / MIB:.1f} MiB; at the peak: {sampler.breakdown}")  # fmt: skip
        print(
            f"server RSS growth   {growth / MIB:.1f} MiB (goal <= 64 MiB: {'met' if growth <= 64 * MIB else 'NOT met'})"
        )
        print(f"upload              {upload_seconds:.2f} s, {size / MIB / upload_seconds:.1f} MiB/s")
        print(f"disk copy           {copy_seconds:.2f} s, {size / MIB / copy_seconds:.1f} MiB/s")
        print(f"upload / copy       {upload_seconds / copy_seconds:.1f}x the time of a disk copy")
        print(f"server CPU          {upload_cpu:.2f} s during the upload, {run_cpu:.1f} s since it started")
        run.add("server RSS baseline", baseline / MIB, "{:.1f} MiB")
        run.add("server RSS peak", sampler.peak / MIB, "{:.1f} MiB")
        run.add("server RSS after", after / MIB, "{:.1f} MiB")
        run.add("at the peak: RssAnon/RssFile/RssShmem", sampler.parts)
        run.add("server RSS growth (goal <= 64 MiB)", growth / MIB, "{:.1f} MiB")
        run.add("upload time", upload_seconds, "{:.2f} s")
        run.add("upload throughput", size / MIB / upload_seconds, "{:.1f} MiB/s")
        run.add("disk copy (bare reference)", size / MIB / copy_seconds, "{:.1f} MiB/s")
        run.add("upload / copy time", upload_seconds / copy_seconds, "{:.1f}x")
        run.add("server CPU during the upload", upload_cpu, "{:.2f} s")
        run.add("server CPU, whole run", run_cpu, "{:.1f} s")

    try:
        run_all(args, one_run, title=f"upload: one {size / MIB:.0f} MiB file")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
