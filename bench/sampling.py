"""Shared by the generation benchmarks: a tenant with a slow builtin agent, a question of a chosen length,
and a sampler of the server process (threads, RSS) and of PostgreSQL's connection count."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import psycopg
from django.db import connection

from agents.engines.base import ChatMessage, TurnContext
from agents.engines.builtin import chunks, plain_answer
from agents.models import Agent, Engine
from bench.llm import MODEL, bare_proxy, fake_openai
from conversations.models import Conversation, Message
from tenants.models import DailyUsage, Tenant
from tenants.services import api_key_create, tenant_create
from tests.servers import Server, serve


def question_for_chunks(count: int) -> str:
    """A question that makes the builtin engine's plain answer exactly `count` content chunks."""
    for words in range(1, 60):
        question = " ".join(f"w{i:02d}" for i in range(words))
        context = TurnContext(
            tenant_id="-", conversation_id=None, message_id=None, system_prompt="",
            history=[ChatMessage(role="user", content=question)],
        )  # fmt: skip
        if len(chunks(plain_answer(context).text)) == count:
            return question
    raise ValueError(f"no question gives {count} chunks")


def seed(
    *, label: str, conversations: int, chunk_delay_ms: int, engine: str = Engine.BUILTIN, model: str = ""
) -> tuple[Tenant, Agent, str, list[str]]:
    """A tenant with a key, an agent (builtin with `chunk_delay_ms`, or `engine` "openai" with `model`) and
    `conversations` named conversations (no title to propose); (tenant, agent, key's secret, their ids)."""
    tenant = tenant_create(tenant_id=f"bench-{secrets.token_hex(4)}", name=f"{label} benchmark")
    _, secret = api_key_create(tenant=tenant, name="bench")
    agent = Agent.objects.create(
        tenant=tenant, name="Bench agent", engine=engine, model=model, options={"chunk_delay_ms": chunk_delay_ms}
    )
    rows = Conversation.objects.bulk_create(
        Conversation(tenant=tenant, agent=agent, name=f"Bench conversation {i:04d}") for i in range(conversations)
    )
    return tenant, agent, secret, [row.id for row in rows]


def delete_tenant(tenant: Tenant) -> None:
    """Delete the benchmark's tenant, then vacuum what it wrote: without autovacuum (this machine's
    PostgreSQL has it off) each run left ~100,000 dead rows behind, and later runs got slower."""
    Conversation.objects.filter(tenant=tenant).delete()
    tenant.delete()
    with connection.cursor() as cursor:  # autocommit: VACUUM cannot run in a transaction
        for model in (Message, Conversation, DailyUsage, Tenant):
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(model._meta.db_table)}")


@dataclass
class Peaks:
    threads: int = 0
    rss: int = 0
    db_connections: int = 0  # to the benchmark's database, this sampler's own excluded
    db_connections_all: int = 0  # to the whole PostgreSQL server (other databases share max_connections)
    samples: int = 0


class ServerSampler:
    """Samples the server process every `interval` seconds in a thread of its own, and PostgreSQL's
    connection count every `db_interval`, keeping the peaks since the last `reset()`."""

    def __init__(self, pid: int, *, interval: float = 0.05, db_interval: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.interval, self.db_interval = interval, db_interval
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="server sampler", daemon=True)
        params = connection.get_connection_params()
        self._db = psycopg.connect(
            **{k: v for k, v in params.items() if k in ("dbname", "user", "password", "host", "port")},
            autocommit=True,
        )
        self.max_connections = int(self._db.execute("SHOW max_connections").fetchone()[0])

    def now(self) -> tuple[int, int]:
        """(threads, RSS bytes) of the server process now."""
        with self.process.oneshot():
            return self.process.num_threads(), self.process.memory_info().rss

    def db_connections(self) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT count(*) FILTER (WHERE datname = current_database() AND pid <> pg_backend_pid()),"
            " count(*) FILTER (WHERE backend_type = 'client backend') FROM pg_stat_activity"
        ).fetchone()
        return row[0], row[1]

    def reset(self) -> None:
        with self._lock:
            self.peaks = Peaks()

    def snapshot(self) -> Peaks:
        with self._lock:
            return replace(self.peaks)

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._db.close()

    def _run(self) -> None:
        next_db = 0.0
        while not self._stop.is_set():
            threads, rss = self.now()
            db = None
            if time.monotonic() >= next_db:
                db = self.db_connections()
                next_db = time.monotonic() + self.db_interval
            with self._lock:
                peaks = self.peaks
                peaks.threads = max(peaks.threads, threads)
                peaks.rss = max(peaks.rss, rss)
                peaks.samples += 1
                if db:
                    peaks.db_connections = max(peaks.db_connections, db[0])
                    peaks.db_connections_all = max(peaks.db_connections_all, db[1])
            self._stop.wait(self.interval)


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def py_spy_start(pid: int, output: str) -> subprocess.Popen:
    """Profile the server with py-spy (pip install py-spy) until stopped: raw stacks, sampled without pausing
    the process, of the thread holding the GIL only (the on-CPU Python work); with PY_SPY_ALL=1 in the
    environment, of every active thread, named (worker threads' work, and their waits for the GIL)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--output", output, "--rate", "100",
         "--nonblocking", *(["--threads"] if os.environ.get("PY_SPY_ALL") else ["--gil"])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def py_spy_stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    process.wait(timeout=30)


def print_setup() -> None:
    """The database, Redis, CPUs and load average this run sees."""
    db = connection.settings_dict
    print(
        f"Database {db['NAME']} on {db['HOST'] or 'local socket'}:{db['PORT']}; REDIS_URL "
        f"{os.environ.get('REDIS_URL') or 'unset (in-process stream log)'}; {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


@contextmanager
def one_server(server: str, *, db_pool: bool, env: dict[str, str] | None = None) -> Iterator[Server]:
    """One `server` process (daphne or uvicorn) under bench.settings on a free port (its log in a temporary
    directory, kept), with `env` added to its environment."""
    connection.close()  # the benchmark's own connection is not counted among the server's
    log = Path(tempfile.mkdtemp(prefix="parley-bench-")) / f"{server}.log"
    env = {"DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB_POOL": "1" if db_pool else None, **(env or {})}
    with serve(server, env=env, log_path=log) as running:
        connections = "psycopg pool (4-32)" if db_pool else "a new database connection per request (DB_CONN_MAX_AGE=0)"
        print(f"{server} (one process, pid {running.pid}) on 127.0.0.1:{running.port}, {connections}, log {log}\n")
        yield running


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds the process has used so far."""
    times = process.cpu_times()
    return times.user + times.system


def engine_of(engine: str) -> dict[str, str]:
    """seed()'s arguments for an agent of `--engine`: openai (of the fake model server) or builtin."""
    return {"engine": "openai", "model": MODEL} if engine == "openai" else {}


@contextmanager
def parley_and_bare(server: str, *, db_pool: bool, chunks: int, delay_ms: float) -> Iterator[tuple[Server, Server]]:
    """The fake model server, the bare proxy of it, and one Parley `server` process whose openai engine uses
    it; yields (Parley, the bare proxy)."""
    with (
        fake_openai(chunks=chunks, delay_ms=delay_ms) as model_url,
        bare_proxy(model_url) as reference,
        one_server(server, db_pool=db_pool, env={"OPENAI_BASE_URL": model_url, "DEFAULT_MODEL": MODEL}) as running,
    ):
        yield running, reference
