"""Benchmark of the WebSocket API (issue 20): N concurrent replies over WebSocket against the same N over SSE,
and the memory of idle sockets subscribed to conversations.

    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/websocket.py
        [--streams 50,200 --rounds 3 --idle 1000 --compression deflate|none --server uvicorn|daphne
         --chunks 100 --chunk-delay-ms 20 --no-db-pool --py-spy FILE]

Starts ONE Parley server process (`--server`, uvicorn by default, under `bench.settings`, with the psycopg
pool unless `--no-db-pool`; `REDIS_URL`, if set, is its stream log and Channels layer, as in production) and
seeds a fresh tenant with a builtin agent (`--chunks` content chunks `--chunk-delay-ms` apart) and one
conversation per reply and per idle socket. The clients run in this process: SSE over raw asyncio streams
(bench/streams.py's), WebSocket with the `websockets` package, each client its own socket (handshake,
`message.send`, `ack`, the reply's `event` frames until `done`, close), offering permessage-deflate as
browsers and `websockets` do unless `--compression none` (the server, started as deployed with
`--ws-per-message-deflate false`, declines it). Then:

1. idle sockets, on the fresh process (after a warm-up): `--idle` sockets (`--idle-concurrency` opening at a
   time), each subscribed to a conversation of its own; once every `ack` has arrived, the server's RSS
   against before (each read once it stops moving), and its CPU while they idle for `--idle-seconds`;
2. for each workload of `--streams`, N concurrent replies over each transport in turn against the same
   process, `--rounds` times, who goes first alternating: completed (all deltas, then done), time to first
   content p50/p99 (from the connection's start), added gap between consecutive deltas (minus the engine's
   delay) p50/p99, wall time, server CPU per reply (its process tree, until every generation has stored its
   end), PostgreSQL and Redis CPU per reply, this client's CPU and how late its event loop ran (p99 of a 5 ms
   sleeper's lateness: that much of a gap's tail is the client's), peak RSS, and the 1-min load average after.

It ends with the table of both transports and WebSocket / SSE, medians over the rounds. Goals (issue 20):
all complete; added gap p99 and server CPU per reply within 1.2x of SSE; 1,000 idle subscribed sockets cost
<= 50 MB of server RSS. Then it deletes the tenant.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

import websockets  # noqa: E402
from django.db import connection  # noqa: E402

from bench.compare import add_server_arguments, load_text  # noqa: E402
from bench.llm import StackCPU  # noqa: E402
from bench.rest_list import verdict  # noqa: E402  (sets Django up)
from bench.sampling import (  # noqa: E402
    ServerSampler,
    delete_tenant,
    mib,
    one_server,
    print_setup,
    py_spy_start,
    py_spy_stop,
    question_for_chunks,
    seed,
)
from bench.streams import (  # noqa: E402
    StreamResult,
    Target,
    _quantile,
    conversations,
    generations_ended,
    ms,
    settle,
    stream,
    stream_counts,
)

WARM_REPLIES = 5  # per transport
WARM_SOCKETS = 20
GOAL_RATIO = 1.2
GOAL_IDLE_BYTES = 50 * 10**6  # for 1,000 sockets
# The consumer writes compact JSON (separators ",", ":"), so these are exact.
ACK = b'{"type":"ack"'
EVENT = b'{"type":"event"'
CONTENT = b'"data":{"content"'
END_MARKERS = (b'"data":{"done"', b'"data":{"error"')
SIDES = {"websocket": "WebSocket", "sse": "SSE"}


@dataclass
class Socket:
    """Where the WebSocket clients connect, and how."""

    url: str  # ws://127.0.0.1:<port>/tenants/<id>/api/v2/ws
    secret: str
    agent_id: str
    question: str
    compression: str | None  # "deflate": offer permessage-deflate, as browsers do

    def connect(self) -> websockets.connect:
        return websockets.connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.secret}"},
            compression=self.compression,
            proxy=None,
            ping_interval=None,  # the server pings; a browser does not
            open_timeout=60,
        )

    def frame(self, kind: str, conversation_id: str, **fields: str) -> str:
        return json.dumps(
            {"type": kind, "request_id": "r1", "agent_id": self.agent_id, "conversation_id": conversation_id, **fields}
        )


async def ws_stream(socket: Socket, conversation_id: str, *, timeout: float = 120) -> StreamResult:
    """Open a socket, send the message and read the reply's events until its end (`ttfb`: the ack)."""
    result = StreamResult()
    try:
        async with asyncio.timeout(timeout):
            await _ws_stream(socket, conversation_id, result)
    except TimeoutError:
        result.outcome = f"no end after {timeout:g} s"
    return result


async def _ws_stream(socket: Socket, conversation_id: str, result: StreamResult) -> None:
    start = time.perf_counter()
    try:
        async with socket.connect() as ws:
            await ws.send(socket.frame("message.send", conversation_id, content=socket.question))
            last = None
            while True:
                frame = await ws.recv(decode=False)
                now = time.perf_counter()
                if not result.ttfb:
                    result.ttfb = now - start
                    if not frame.startswith(ACK):
                        result.outcome = frame[:80].decode(errors="replace")
                        return
                    continue
                if not frame.startswith(EVENT):  # an error, or reconnect
                    result.outcome = frame[:80].decode(errors="replace")
                    return
                if not result.first_event:
                    result.first_event = now - start
                if CONTENT in frame:
                    if not result.first_content:
                        result.first_content = now - start
                    if last is not None:
                        result.gaps.append(now - last)
                    last = now
                    result.contents += 1
                elif any(marker in frame for marker in END_MARKERS):
                    if b'"status":"completed"' not in frame:
                        result.outcome = "ended without done/completed"
                    return
    except (OSError, websockets.WebSocketException) as exc:
        result.outcome = type(exc).__name__


class LoopLag:
    """How late this process's event loop wakes a task sleeping 5 ms: the clients' own delay, which every gap
    they measure includes (a tail here is not the server's)."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            self.lags.append(time.perf_counter() - before - self.period)

    def start(self) -> None:
        self.lags = []
        self._task = asyncio.create_task(self._run())

    def stop(self) -> list[float]:
        self._task.cancel()
        return sorted(self.lags)


@dataclass
class Bench:
    """The server under test and the ways to reach it."""

    sse: Target
    socket: Socket
    sampler: ServerSampler
    cpu: StackCPU
    tenant_id: str


@dataclass
class Table:
    """Figures by (workload, label) and transport, a list each (one per round), printed as medians."""

    rows: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    completed: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # [complete, replies]

    def add(self, workload: str, side: str, label: str, value: float, fmt: str) -> None:
        self.rows.setdefault((workload, label), {}).setdefault(side, []).append(value)
        self.formats[label] = fmt

    def median(self, workload: str, side: str, label: str) -> float:
        values = self.rows.get((workload, label), {}).get(side)
        return statistics.median(values) if values else float("nan")

    def ratio(self, workload: str, label: str) -> float:
        """WebSocket / SSE of the medians; NaN where SSE's is not positive (a gap's p50 of about 0)."""
        reference = self.median(workload, "sse", label)
        return self.median(workload, "websocket", label) / reference if reference > 0 else float("nan")

    def print(self, title: str) -> None:
        lines = [("", *SIDES.values(), "WebSocket / SSE")]
        for (workload, side), (done, total) in self.completed.items():
            if side == "websocket":
                other = self.completed.get((workload, "sse"), [0, 0])
                lines.append((f"{workload}: completed, all rounds", f"{done}/{total}", f"{other[0]}/{other[1]}", ""))
        for workload, label in self.rows:
            fmt = self.formats[label]
            cells = [fmt.format(self.median(workload, side, label)) for side in SIDES]
            ratio = self.ratio(workload, label)
            lines.append((f"{workload}: {label}", *cells, "-" if ratio != ratio else f"{ratio:.2f}x"))
        lines[1:] = sorted(lines[1:], key=lambda line: int(line[0].split()[0]))  # by workload, stable
        widths = [max(len(line[i]) for line in lines) for i in range(4)]
        print(f"\n{title}")
        for line in lines:
            print(
                f"{line[0]:<{widths[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(line[1:], widths[1:], strict=True))
            )


async def burst(args, bench: Bench, side: str, ids: list[str], table: Table, profile: str | None) -> None:
    """`len(ids)` concurrent replies over one transport; its figures into `table`."""
    count = len(ids)
    _, rss_idle = bench.sampler.now()
    bench.sampler.reset()
    bench.cpu.start()
    client_before = time.process_time()
    profiler = py_spy_start(bench.sampler.process.pid, profile) if profile else None
    lag = LoopLag()
    lag.start()
    started = time.perf_counter()
    if side == "websocket":
        results = await asyncio.gather(*(ws_stream(bench.socket, cid) for cid in ids))
    else:
        results = await asyncio.gather(*(stream(bench.sse, cid) for cid in ids))
    elapsed = time.perf_counter() - started
    lags = lag.stop()
    await generations_ended(bench.tenant_id)  # what a generation does after its last event (storing it) counts
    if profiler:
        py_spy_stop(profiler)
    spent = bench.cpu.stop()
    client = time.process_time() - client_before
    await asyncio.sleep(0.1)  # one more sample of the server
    peaks = bench.sampler.snapshot()

    outcomes = collections.Counter(r.outcome for r in results)
    completed = sum(r.outcome == "ok" and r.contents == args.chunks for r in results)
    added = sorted(gap - args.chunk_delay_ms / 1000 for r in results for gap in r.gaps)
    first = sorted(r.first_content for r in results if r.first_content)
    workload = f"{count} replies"
    print(
        f"{SIDES[side]}, {workload}: completed {completed}/{count}"
        + ("" if completed == count else f" {dict(outcomes)}")
        + f"; wall {elapsed:.2f} s; first content p50 {ms(_quantile(first, 0.5))}, p99 {ms(_quantile(first, 0.99))}"
        + (f"; added gap p50 {ms(_quantile(added, 0.5))}, p99 {ms(_quantile(added, 0.99))}" if added else "")
        + f"; client loop lag p99 {ms(_quantile(lags, 0.99))}"
        + f"; CPU server {spent.server:.2f} s ({spent.server_system:.2f} s system), "
        f"PostgreSQL {spent.postgres:.2f} s, Redis {spent.redis:.2f} s, client {client:.2f} s; "
        f"peak RSS {mib(peaks.rss)}; load {load_text()}",
        flush=True,
    )
    totals = table.completed.setdefault((workload, side), [0, 0])
    totals[0] += completed
    totals[1] += count

    def add(label: str, value: float, fmt: str) -> None:
        table.add(workload, side, label, value, fmt)

    answers = sorted(r.ttfb for r in results if r.ttfb)
    add("first answer p50 (SSE: status line; WS: ack)", _quantile(answers, 0.5) * 1000, "{:.0f} ms")
    add("first content p50", _quantile(first, 0.5) * 1000, "{:.0f} ms")
    add("first content p99", _quantile(first, 0.99) * 1000, "{:.0f} ms")
    add("added gap p50", _quantile(added, 0.5) * 1000, "{:.1f} ms")
    add("added gap p99", _quantile(added, 0.99) * 1000, "{:.1f} ms")
    add("wall time", elapsed, "{:.2f} s")
    add("server CPU per reply", spent.server / count * 1000, "{:.1f} ms")
    add("server system CPU per reply", spent.server_system / count * 1000, "{:.1f} ms")
    add("PostgreSQL + Redis CPU per reply", (spent.postgres + spent.redis) / count * 1000, "{:.2f} ms")
    add("client CPU per reply (this process)", client / count * 1000, "{:.1f} ms")
    add("client event loop lag p99", _quantile(lags, 0.99) * 1000, "{:.1f} ms")
    add("peak RSS", peaks.rss / 2**20, "{:.0f} MiB")
    add("RSS growth", (peaks.rss - rss_idle) / 2**20, "{:+.0f} MiB")
    add("1-min load average after", os.getloadavg()[0], "{:.2f}")


async def subscribed(socket: Socket, conversation_id: str, gate: asyncio.Semaphore):
    """A socket subscribed to the conversation, once its ack has arrived."""
    async with gate:
        ws = await socket.connect()
        await ws.send(socket.frame("conversation.subscribe", conversation_id))
        frame = await ws.recv(decode=False)
    if not frame.startswith(ACK):
        await ws.close()
        raise RuntimeError(frame[:200].decode(errors="replace"))
    return ws


async def steady_rss(sampler: ServerSampler, *, seconds: float = 30) -> int:
    """The server's RSS once it stops moving (five readings 0.5 s apart within 0.5%), or after `seconds`."""
    readings = []
    deadline = time.monotonic() + seconds
    while True:
        readings.append(sampler.now()[1])
        recent = readings[-5:]
        if len(recent) == 5 and max(recent) - min(recent) <= max(recent) * 0.005 or time.monotonic() > deadline:
            return recent[-1]
        await asyncio.sleep(0.5)


async def measure_idle(args, bench: Bench, ids: list[str]) -> dict[str, float]:
    """`len(ids)` idle sockets, each subscribed to one of `ids`: RSS before and after, CPU while they idle."""
    count = len(ids)
    await settle(bench.tenant_id, bench.sampler)
    threads_before, _ = bench.sampler.now()
    rss_before = await steady_rss(bench.sampler)
    gate = asyncio.Semaphore(args.idle_concurrency)
    started = time.perf_counter()
    opened = await asyncio.gather(*(subscribed(bench.socket, cid, gate) for cid in ids), return_exceptions=True)
    elapsed = time.perf_counter() - started
    sockets = [ws for ws in opened if not isinstance(ws, BaseException)]
    failures = collections.Counter(f"{type(ws).__name__}: {ws}"[:120] for ws in opened if isinstance(ws, BaseException))
    rss_after = await steady_rss(bench.sampler)
    threads_after, _ = bench.sampler.now()
    bench.cpu.start()
    await asyncio.sleep(args.idle_seconds)
    idle = bench.cpu.stop()
    await asyncio.gather(*(ws.close() for ws in sockets))
    await asyncio.sleep(1)
    _, rss_closed = bench.sampler.now()

    growth = rss_after - rss_before
    per_socket = growth / len(sockets) if sockets else float("nan")
    goal = GOAL_IDLE_BYTES * count / 1000
    print(
        f"{count} idle subscribed sockets ({args.idle_concurrency} opening at a time) in {elapsed:.1f} s: "
        f"{len(sockets)} acked" + (f", failed {dict(failures)}" if failures else "")
    )
    print(
        f"  server RSS before {mib(rss_before)}, with them {mib(rss_after)}: {growth / 1e6:+.1f} MB, "
        f"{per_socket / 1e3:.1f} KB a socket   goal <= {goal / 1e6:.1f} MB: "
        f"{verdict(len(sockets) == count and growth <= goal)}   (threads {threads_before} -> {threads_after}; "
        f"after closing them {mib(rss_closed)})"
    )
    print(
        f"  while they idle for {args.idle_seconds:g} s: server CPU {idle.server / args.idle_seconds * 100:.1f}%, "
        f"PostgreSQL {idle.postgres / args.idle_seconds * 100:.1f}%, Redis {idle.redis / args.idle_seconds * 100:.1f}%"
        f" of a core; load {load_text()}\n",
        flush=True,
    )
    return {"sockets": len(sockets), "growth": growth, "per_socket": per_socket, "goal": goal}


async def measure(args, bench: Bench, ids: list[str], table: Table) -> dict[str, float]:
    take = iter(ids)
    # Warm-up: every code path once, so that imports and caches count neither as the sockets' memory nor as
    # the first burst's CPU.
    warm = await asyncio.gather(
        *(ws_stream(bench.socket, cid) for cid in conversations(take, WARM_REPLIES)),
        *(stream(bench.sse, cid) for cid in conversations(take, WARM_REPLIES)),
    )
    if any(r.outcome != "ok" or r.contents != args.chunks for r in warm):
        raise RuntimeError(f"warm-up replies: {[(r.outcome, r.contents) for r in warm]}")
    gate = asyncio.Semaphore(args.idle_concurrency)
    for ws in await asyncio.gather(*(subscribed(bench.socket, cid, gate) for cid in conversations(take, WARM_SOCKETS))):
        await ws.close()
    idle = await measure_idle(args, bench, conversations(take, args.idle)) if args.idle else {}
    await settle(bench.tenant_id, bench.sampler)
    for count in args.streams:
        for round_ in range(args.rounds):
            for side in ("websocket", "sse") if round_ % 2 == 0 else ("sse", "websocket"):
                profile = (
                    f"{Path(args.py_spy).with_suffix('')}-{side}-{count}.txt" if args.py_spy and not round_ else None
                )
                await burst(args, bench, side, conversations(take, count), table, profile)
                await asyncio.sleep(2)
    return idle


def raise_open_files(needed: int) -> None:
    """This process's (and so the server's, started after) limit of open files, up to `needed` if it can."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard)
        )


def print_verdicts(args, table: Table, idle: dict[str, float]) -> None:
    print("\nGoals (issue 20)")
    for count in args.streams:
        workload = f"{count} replies"
        done = {side: table.completed.get((workload, side), [0, 0]) for side in SIDES}
        complete = all(d[0] == d[1] for d in done.values())
        gap, cpu = table.ratio(workload, "added gap p99"), table.ratio(workload, "server CPU per reply")
        gaps = " / ".join(f"{table.median(workload, side, 'added gap p99'):.1f}" for side in SIDES)
        print(
            f"  {workload}: all complete (WebSocket {done['websocket'][0]}/{done['websocket'][1]}, "
            f"SSE {done['sse'][0]}/{done['sse'][1]}): {verdict(complete)};  added gap p99 WebSocket / SSE "
            f"{gap:.2f}x ({gaps} ms) <= {GOAL_RATIO}: {verdict(gap <= GOAL_RATIO)};  "
            f"server CPU per reply WebSocket / SSE {cpu:.2f}x <= {GOAL_RATIO}: {verdict(cpu <= GOAL_RATIO)}"
        )
    if idle:
        ok = idle["sockets"] == args.idle and idle["growth"] <= idle["goal"]
        print(
            f"  {args.idle} idle subscribed sockets: server RSS {idle['growth'] / 1e6:+.1f} MB "
            f"({idle['per_socket'] / 1e3:.1f} KB a socket) <= {idle['goal'] / 1e6:.1f} MB: {verdict(ok)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=stream_counts, default=[50, 200], help="workloads, e.g. 50,200")
    parser.add_argument("--rounds", type=int, default=3, help="of each workload on each transport, interleaved")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per reply")
    parser.add_argument("--chunk-delay-ms", type=int, default=20, help="between chunks (the builtin engine's)")
    parser.add_argument("--idle", type=int, default=1000, help="idle subscribed sockets (0: none)")
    parser.add_argument("--idle-concurrency", type=int, default=50, help="sockets opening at a time")
    parser.add_argument("--idle-seconds", type=float, default=15, help="CPU measured while the sockets idle")
    parser.add_argument(
        "--compression", choices=("deflate", "none"), default="deflate", help="what the WebSocket clients offer"
    )
    parser.add_argument(
        "--db-pool", action=argparse.BooleanOptionalAction, default=True, help="serve with psycopg's connection pool"
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="profile the server during each first-round burst (FILE-<side>-<N>.txt)"
    )
    add_server_arguments(parser, both=False)
    args = parser.parse_args()

    raise_open_files(args.idle + max(args.streams) + 1024)
    print_setup()
    question = question_for_chunks(args.chunks)
    count = 2 * WARM_REPLIES + WARM_SOCKETS + args.idle + 2 * args.rounds * sum(args.streams)
    tenant, agent, secret, ids = seed(label="websocket", conversations=count, chunk_delay_ms=args.chunk_delay_ms)
    tenant_id = tenant.id
    print(f"Seeded tenant {tenant_id}: 1 builtin agent, {count} conversations")
    table = Table()
    try:
        with (
            one_server(args.server, db_pool=args.db_pool) as running,
            ServerSampler(running.pid) as sampler,
        ):
            bench = Bench(
                Target(running.port, f"/tenants/{tenant_id}/api/v2/agents/{agent.id}/conversations", secret, question),
                Socket(
                    f"ws://127.0.0.1:{running.port}/tenants/{tenant_id}/api/v2/ws",
                    secret,
                    agent.id,
                    question,
                    None if args.compression == "none" else args.compression,
                ),
                sampler,
                StackCPU(running.pid, connection.settings_dict["NAME"]),
                tenant_id,
            )
            idle = asyncio.run(measure(args, bench, ids, table))
        table.print(
            f"builtin engine, {args.chunks} chunks {args.chunk_delay_ms} ms apart; "
            f"{'Redis stream log and layer' if os.environ.get('REDIS_URL') else 'in-process stream log and layer'}; "
            f"{'psycopg pool' if args.db_pool else 'a connection per request'}; one {args.server} process; "
            f"WebSocket compression {args.compression}; medians of {args.rounds} rounds"
        )
        print_verdicts(args, table, idle)
        print(f"\nload average at the end: {load_text()}")
    finally:
        delete_tenant(tenant)
        print(f"Deleted tenant {tenant_id}")


if __name__ == "__main__":
    main()
