"""The LLM path for the generation benchmarks: a fake model server, the bare reference proxy, the CPU of the
whole stack, and a table of Parley against the reference.

- `fake_openai()` runs bench/fake_openai.py in a process of its own;
- `bare_proxy()` serves bench/bare_proxy.py with one uvicorn process, as Parley is served;
- `StackCPU` reads the CPU seconds of a server's process tree, of PostgreSQL's processes and of Redis;
- `Comparison` collects figures of both sides by workload and prints them with their ratios.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.servers import Server, free_port, serve, stop

ROOT = Path(__file__).resolve().parent.parent
MODEL = "bench"
ENGINES = ("builtin", "openai")


@contextmanager
def fake_openai(*, chunks: int, delay_ms: float) -> Iterator[str]:
    """The fake model server on a free port; yields its base URL (…/v1)."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="parley-bench-")) / "fake-openai.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_openai", "--port", str(port), "--chunks", str(chunks),
             "--delay-ms", str(delay_ms)],
            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": MODEL}, timeout=30)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the fake OpenAI server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        print(f"fake OpenAI server (pid {process.pid}) on 127.0.0.1:{port}: {chunks} chunks {delay_ms:g} ms apart")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


@contextmanager
def bare_proxy(base_url: str) -> Iterator[Server]:
    """bench/bare_proxy.py under one uvicorn process (uvloop, httptools), proxying `base_url`."""
    log = Path(tempfile.mkdtemp(prefix="parley-bench-")) / "bare-proxy.log"
    env = {"OPENAI_BASE_URL": base_url, "DEFAULT_MODEL": MODEL}
    with serve("uvicorn", env=env, log_path=log, application="bench.bare_proxy:app") as running:
        print(f"bare proxy (one uvicorn process, pid {running.pid}) on 127.0.0.1:{running.port}, log {log}")
        yield running


def _times(process: psutil.Process) -> tuple[float, float] | None:
    """(user + system, system) CPU seconds of a process so far; None once it has gone."""
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return None
    return times.user + times.system, times.system


@dataclass
class CPUReading:
    server: float
    postgres: float
    redis: float
    server_system: float = 0.0  # of `server`: in the kernel (sockets, futexes)


# A client's backend: "postgres: [<cluster>: ]<user> <database> <host>(<port>) <state>".
BACKEND_TITLE = re.compile(r"postgres: (?:\S+: )?\S+ (?P<database>\S+) (?:\S*\(\d+\)|\[local\])")


class StackCPU:
    """CPU seconds used by a server's process tree, by PostgreSQL (its backends of the benchmark's database
    and its own processes: not other databases' clients) and by redis-server, between `start()` and
    `stop()`. Counted per process: one that starts meanwhile counts from zero; one that exits meanwhile is
    left out, its seconds with it (with a pool, the server's connections stay)."""

    def __init__(self, pid: int, database: str) -> None:
        self.server = psutil.Process(pid)
        self.database = database
        self._start: dict[tuple[str, int], tuple[float, float]] = {}

    def _processes(self) -> list[tuple[str, psutil.Process]]:
        found = [("server", p) for p in (self.server, *self.server.children(recursive=True))]
        for process in psutil.process_iter(["name", "cmdline"]):
            if process.info["name"] == "redis-server":
                found.append(("redis", process))
            elif process.info["name"] == "postgres":
                backend = BACKEND_TITLE.match(" ".join(process.info["cmdline"] or []))
                if backend is None or backend["database"] == self.database:
                    found.append(("postgres", process))
        return found

    def _read(self) -> dict[tuple[str, int], tuple[float, float]]:
        readings = {(kind, process.pid): _times(process) for kind, process in self._processes()}
        return {key: times for key, times in readings.items() if times is not None}  # (gone meanwhile)

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> CPUReading:
        spent = {"server": 0.0, "postgres": 0.0, "redis": 0.0}
        system = 0.0
        for (kind, pid), (total, kernel) in self._read().items():
            before_total, before_kernel = self._start.get((kind, pid), (0.0, 0.0))
            spent[kind] += total - before_total
            if kind == "server":
                system += kernel - before_kernel
        return CPUReading(**spent, server_system=system)


@dataclass
class Comparison:
    """Figures of Parley and of the bare proxy by workload ("50 streams"), printed side by side with
    Parley / bare. A figure measured more than once (rounds) shows its median."""

    title: str
    rows: dict[tuple[str, str], dict[str, list[float | str]]] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)

    def add(self, workload: str, side: str, label: str, value: float | str, fmt: str = "{}") -> None:
        self.rows.setdefault((workload, label), {}).setdefault(side, []).append(value)
        self.formats[label] = fmt

    def print(self) -> None:
        def cell(values: list | None, fmt: str) -> str:
            if not values:
                return "-"
            if all(isinstance(v, int | float) for v in values):
                return fmt.format(statistics.median(values))
            return " / ".join(str(v) for v in values)

        lines = []
        for (workload, label), sides in self.rows.items():
            fmt = self.formats[label]
            parley, bare = sides.get("parley"), sides.get("bare")
            ratio = "-"
            if parley and bare and all(isinstance(v, int | float) for v in parley + bare):
                denominator = statistics.median(bare)
                if denominator:
                    ratio = f"{statistics.median(parley) / denominator:.2f}x"
            lines.append((f"{workload}: {label}", cell(parley, fmt), cell(bare, fmt), ratio))
        widths = [
            max(len(line[i]) for line in [("", "Parley", "bare proxy", "Parley / bare"), *lines]) for i in range(4)
        ]
        print(f"\n{self.title}")
        for line in [("", "Parley", "bare proxy", "Parley / bare"), *lines]:
            print(
                f"{line[0]:<{widths[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(line[1:], widths[1:], strict=True))
            )
