"""Real daphne processes on the test database, for tests of what crosses the wire."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent


def database_url_of_tests() -> str:
    db = connection.settings_dict
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return f"postgres://{quote(db['USER'], safe='')}{password}@{quote(host, safe='')}{port}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def daphne_server(**env: str) -> Iterator[str]:
    """Serve the project on a free port with the test database (and `env` overrides); yield its URL."""
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url_of_tests(),
        "THROTTLE_RATE": "1000000/min",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    log = open(BASE_DIR / "var" / f"daphne-test-{port}.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=BASE_DIR,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not start: {(BASE_DIR / 'var' / log.name).read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def parse_sse(raw: bytes) -> list[dict]:
    """Raw SSE bytes as a list of {"id", "data"} events and {"comment"} entries, strictly."""
    text = raw.decode()
    assert text == "" or text.endswith("\n\n"), "a stream ends at an event boundary"
    events = []
    for block in filter(None, text.split("\n\n")):
        entry: dict = {}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "":
                entry["comment"] = value
            elif field in ("id", "data"):
                assert field not in entry, f"one {field} line per event: {block!r}"
                entry[field] = json.loads(value) if field == "data" else value
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        events.append(entry)
    return events
