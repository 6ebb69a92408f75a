"""Real server processes (daphne or uvicorn) serving the project, for tests of what crosses the wire and
for the benchmarks in bench/: `serve()` starts one on a free port and waits for /healthz."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
SERVERS = ("daphne", "uvicorn")
APPLICATION = "config.asgi:application"


def database_url_of_tests() -> str:
    db = connection.settings_dict
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db["PORT"] else ""
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return f"postgres://{quote(db['USER'], safe='')}{password}@{quote(host, safe='')}{port}/{db['NAME']}"


def env_of_tests(**env: str | None) -> dict[str, str | None]:
    """The environment a server for a test runs with: the test database, a throttle that never trips,
    warnings only in the log, a short drain when it is stopped; `env` adds or overrides (None removes a
    variable)."""
    return {
        "DATABASE_URL": database_url_of_tests(),
        "THROTTLE_RATE": "1000000/min",
        "LOG_LEVEL": "WARNING",
        "DRAIN_SECONDS": "2",
        **env,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running server process: `url` is http://127.0.0.1:<port>; `process.pid` is the process that
    serves (no supervisor or reloader in between), ready for psutil.Process or /proc/<pid>."""

    name: str  # "daphne" or "uvicorn"
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(no log: {exc})"


def _executable(name: str) -> list[str]:
    """The console script next to this interpreter (the virtualenv's), else `python -m name`."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


def server_command(server: str, port: int, args: Sequence[str] = (), application: str = APPLICATION) -> list[str]:
    """The command line of one `server` process serving `application` on 127.0.0.1:`port`, with extra `args`.

    Both keep their defaults otherwise, as deployed (each writes an access line per request to its log).
    uvicorn: uvloop and httptools, WebSocket frames uncompressed, and lifespan events in uvicorn's default
    mode, "auto": an application that handles them (config.asgi's starts the process's maintenance at
    start-up) gets them; one that does not (bc15749's and earlier, whose ProtocolTypeRouter knows "http"
    only) makes uvicorn log "ASGI 'lifespan' protocol appears unsupported." and serve on, its maintenance
    starting with the first request as under daphne, which sends none. `args` come last: ("--lifespan",
    "on") makes a failed start-up fatal."""
    if server == "uvicorn":
        return [
            *_executable("uvicorn"), application, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--lifespan", "auto", "--ws-per-message-deflate", "false", *args,
        ]  # fmt: skip
    if server == "daphne":
        return [*_executable("daphne"), "-b", "127.0.0.1", "-p", str(port), *args, application]
    raise ValueError(f"unknown server {server!r}: one of {', '.join(SERVERS)}")


@contextmanager
def serve(
    server: str = "uvicorn",
    *,
    env: Mapping[str, str | None] | None = None,
    args: Sequence[str] = (),
    log_path: Path | str | None = None,
    port: int | None = None,
    timeout: float = 60,
    application: str = APPLICATION,
) -> Iterator[Server]:
    """Serve the project (config.asgi, from the repository root; or another `application`) with one `server`
    process on `port` (a free one by default) and yield it once GET /healthz answers 200; terminate it on exit.

    The process gets this process's environment plus `env` (a None value removes the variable): the
    caller says which DATABASE_URL, DJANGO_SETTINGS_MODULE, REDIS_URL... (`env_of_tests()` gives the test
    database's). Its output goes to `log_path`, kept afterwards; without one, to a temporary file
    removed on exit. Raises RuntimeError with the end of the log if the process exits first, or if
    /healthz has not answered 200 within `timeout` seconds.
    """
    port = port or free_port()
    environment = {**os.environ}
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    temporary = log_path is None
    if temporary:
        descriptor, name = tempfile.mkstemp(prefix=f"parley-{server}-{port}-", suffix=".log")
        os.close(descriptor)
        log_path = name
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = server_command(server, port, args, application)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=BASE_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT)
    running = Server(name=server, port=port, process=process, log_path=log_path)
    try:
        _wait_healthy(running, timeout)
        yield running
    finally:
        stop(process)
        if temporary:
            log_path.unlink(missing_ok=True)


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            response = httpx.get(f"{server.url}/healthz", timeout=2)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}"
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with status {server.process.returncode} before /healthz answered 200; "
                f"the end of its log ({server.log_path}):\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.name} on port {server.port}: /healthz did not answer 200 within {timeout:g} s "
                f"(last: {last}); the end of its log ({server.log_path}):\n{server.log_tail()}"
            )
        time.sleep(0.1)


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@contextmanager
def served(**env: str) -> Iterator[str]:
    """Serve the project as deployed (uvicorn) on a free port with the test database (and `env`
    overrides); yield its URL. Its log is var/server-test-<port>.log while it runs."""
    with served_process(**env) as server:
        yield server.url


@contextmanager
def served_process(**env: str) -> Iterator[Server]:
    """served, yielding the Server (its pid, its log)."""
    port = free_port()
    log_path = BASE_DIR / "var" / f"server-test-{port}.log"
    try:
        with serve("uvicorn", env=env_of_tests(**env), log_path=log_path, port=port, timeout=30) as server:
            yield server
    finally:
        log_path.unlink(missing_ok=True)


def parse_sse(raw: bytes) -> list[dict]:
    """Raw SSE bytes as a list of {"id", "data", "retry"} events and {"comment"} entries, strictly."""
    text = raw.decode()
    assert text == "" or text.endswith("\n\n"), "a stream ends at an event boundary"
    events = []
    for block in filter(None, text.split("\n\n")):
        entry: dict = {}
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "":
                entry["comment"] = value
            elif field in ("id", "data", "retry"):
                assert field not in entry, f"one {field} line per event: {block!r}"
                entry[field] = value if field == "id" else json.loads(value)
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        events.append(entry)
    return events
