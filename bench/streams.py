"""Benchmark of SSE streaming: many concurrent `POST .../conversations/{cid}/stream` against one server.

    DATABASE_URL=postgres://... .venv/bin/python bench/streams.py [--streams 500 --cycles 1000 --db-pool]
        [--server daphne|uvicorn|both --rounds N]

Seeds a fresh tenant with one builtin agent (`chunk_delay_ms` 20, questions sized for 100 content chunks)
and one conversation per stream, serves the project with ONE server process (`--server`, uvicorn by default)
under `bench.settings`, and
measures from a client in this process, which speaks HTTP/1.1 over raw asyncio streams (no HTTP library,
no JSON parsing per event) so that the client's own cost stays small next to the gaps it measures:

1. memory over `--cycles` connect/disconnect cycles (open a stream, read its first event, disconnect; the
   generation goes on, as by default): the server's RSS before and after, once every generation has ended;
   "before" is read after a warm-up that includes 100 cycles at the same concurrency;
2. time to first byte of a stream against a plain JSON GET of the conversation, alternating;
3. `--streams` concurrent streams: how many completed (all 100 deltas, then `done`), p50/p99 of the gap
   between consecutive content deltas at the client minus the engine's 20 ms, the server's peak RSS and
   threads, and PostgreSQL's peak connection count.

Goals (issue 4): all complete; p99 added gap <= 50 ms; RSS growth <= 100 MB; RSS after the cycles within
+5% of before. Then it deletes the tenant.

With `--server both` it runs daphne and uvicorn in turn (`--rounds` times each, interleaved), each run on a
fresh tenant and a fresh server process, and ends with one table of both (with the server's CPU time and
the load average at the start and end of each run). REDIS_URL, if set, is the servers' stream log.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

import psutil  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402

from bench.compare import Run, add_server_arguments, load_text, per_run, run_all  # noqa: E402
from bench.rest_list import percentile, verdict  # noqa: E402  (sets Django up)
from bench.sampling import (  # noqa: E402
    ServerSampler,
    cpu_seconds,
    delete_tenant,
    mib,
    one_server,
    print_setup,
    py_spy_start,
    py_spy_stop,
    question_for_chunks,
    seed,
)
from conversations.models import Message, MessageStatus  # noqa: E402

WARM_CYCLES = 100
CONTENT = b'data: {"content"'
END_MARKERS = (b'data: {"done"', b'data: {"error"')


@dataclass
class Target:
    port: int
    prefix: str  # /tenants/<id>/api/v2/agents/<aid>/conversations
    secret: str
    question: str

    def request(self, method: str, path: str, body: dict | None = None) -> bytes:
        payload = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {self.secret}\r\n"
            f"Accept: {'text/event-stream' if body is not None else 'application/json'}\r\nConnection: close\r\n"
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        return (head + "\r\n").encode() + payload


@dataclass
class StreamResult:
    outcome: str = "ok"  # or what went wrong
    ttfb: float = 0.0  # request sent -> status line
    first_event: float = 0.0  # request sent -> first complete event
    contents: int = 0
    gaps: list[float] = field(default_factory=list)  # between consecutive content deltas, seconds


async def _open(target: Target, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float, float, int]:
    """Send a request; (reader, writer, start, ttfb, status) once the response's head has arrived."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port, limit=2**20)
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, start, time.perf_counter() - start, int(head.split(b" ", 2)[1])


async def stream(
    target: Target, conversation_id: str, *, first_event_only: bool = False, timeout: float = 120
) -> StreamResult:
    """POST a message to the stream endpoint and read the SSE reply (or just its first event)."""
    result = StreamResult()
    try:
        async with asyncio.timeout(timeout):
            await _stream(target, conversation_id, result, first_event_only)
    except TimeoutError:
        result.outcome = f"no end after {timeout:g} s"
    return result


async def _stream(target: Target, conversation_id: str, result: StreamResult, first_event_only: bool) -> None:
    raw = target.request("POST", f"{target.prefix}/{conversation_id}/stream", {"content": target.question})
    writer = None
    try:
        reader, writer, start, result.ttfb, status = await _open(target, raw)
        if status != 200:
            result.outcome = f"HTTP {status}"
            return
        buffer, last, ended = b"", None, False
        while not ended:
            data = await reader.read(65536)
            if not data:
                result.outcome = "closed before done"
                break
            now = time.perf_counter()
            buffer += data
            end = buffer.rfind(b"\n\n")
            if end < 0:
                continue
            complete, buffer = buffer[: end + 2], buffer[end + 2 :]
            if not result.first_event:
                result.first_event = now - start
                if first_event_only:
                    break
            # Events read together arrived together: the gap to the first is real, the others are 0.
            for _ in range(complete.count(CONTENT)):
                if last is not None:
                    result.gaps.append(now - last)
                last = now
                result.contents += 1
            if any(marker in complete for marker in END_MARKERS):
                ended = True
                if b'"status":"completed"' not in complete:
                    result.outcome = "ended without done/completed"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.outcome = type(exc).__name__
    finally:
        if writer is not None:
            writer.close()


async def plain_get(target: Target, conversation_id: str) -> float:
    """Time to first byte of `GET .../conversations/{cid}` (read whole, then closed)."""
    reader, writer, _, ttfb, status = await _open(target, target.request("GET", f"{target.prefix}/{conversation_id}"))
    await reader.read()
    writer.close()
    if status != 200:
        raise RuntimeError(f"GET conversation: HTTP {status}")
    return ttfb


def in_progress_count(tenant_id: str) -> int:
    return Message.objects.filter(tenant_id=tenant_id, status=MessageStatus.IN_PROGRESS).count()


async def settle(tenant_id: str, sampler: ServerSampler, seconds: float = 60) -> tuple[int, int]:
    """Wait until no generation of the tenant runs, then a little more; (threads, RSS) then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and await sync_to_async(in_progress_count)(tenant_id):
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    return sampler.now()


async def cycles(target: Target, conversation_ids: list[str], concurrency: int) -> collections.Counter:
    queue = iter(conversation_ids)
    outcomes: collections.Counter = collections.Counter()

    async def worker() -> None:
        for conversation_id in queue:
            outcomes[(await stream(target, conversation_id, first_event_only=True)).outcome] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def measure(
    args, target: Target, tenant_id: str, ids: list[str], sampler: ServerSampler, server: str, run: Run
) -> None:
    take = iter(ids)

    def conversations(count: int) -> list[str]:
        return [next(take) for _ in range(count)]

    # Warm-up: every code path once, so that imports and caches are not counted as growth; then cycles at
    # the measured concurrency, which start the threads and pooled connections it needs (each with its
    # own memory: about 5 MiB in all) before "before" is read.
    await cycles(target, conversations(20), 5)
    warm = await asyncio.gather(*(stream(target, cid) for cid in conversations(5)))
    if any(r.outcome != "ok" for r in warm):
        raise RuntimeError(f"warm-up streams: {[r.outcome for r in warm]}")
    await plain_get(target, ids[0])
    threads_first, rss_first = await settle(tenant_id, sampler)
    await cycles(target, conversations(WARM_CYCLES), args.cycle_concurrency)
    threads_before, rss_before = await settle(tenant_id, sampler)
    print(
        f"Server after warm-up: {threads_first} threads, RSS {mib(rss_first)}; after {WARM_CYCLES} more cycles "
        f"({args.cycle_concurrency} at a time): {threads_before} threads, RSS {mib(rss_before)}"
    )
    run.add("idle RSS after warm-up", rss_first / 2**20, "{:.1f} MiB")

    started = time.perf_counter()
    outcomes = await cycles(target, conversations(args.cycles), args.cycle_concurrency)
    elapsed = time.perf_counter() - started
    threads_after, rss_after = await settle(tenant_id, sampler)
    growth = rss_after / rss_before - 1
    print(
        f"{args.cycles} connect/disconnect cycles (POST stream, read the first event, disconnect; "
        f"{args.cycle_concurrency} at a time) in {elapsed:.1f} s: {dict(outcomes)}"
    )
    print(
        f"  RSS before {mib(rss_before)}, after (generations ended, +2 s) {mib(rss_after)}: "
        f"{growth * 100:+.1f}%   goal <= +5%: {verdict(growth <= 0.05)}   threads {threads_before} -> {threads_after}"
    )
    print()
    run.add(f"{args.cycles} cycles: outcomes ok", outcomes["ok"], "{:.0f}")
    run.add("cycles: RSS before", rss_before / 2**20, "{:.1f} MiB")
    run.add("cycles: RSS after", rss_after / 2**20, "{:.1f} MiB")
    run.add("cycles: RSS growth (goal <= +5%)", growth * 100, "{:+.1f}%")
    run.add("cycles: threads before -> after", f"{threads_before} -> {threads_after}")
    run.add("cycles: wall time", elapsed, "{:.1f} s")

    stream_ttfb, stream_first, get_ttfb = [], [], []
    for i, cid in enumerate(conversations(args.ttfb_samples)):
        for side in ("stream", "get") if i % 2 == 0 else ("get", "stream"):
            if side == "get":
                get_ttfb.append(await plain_get(target, cid))
            else:
                result = await stream(target, cid, first_event_only=True)
                stream_ttfb.append(result.ttfb)
                stream_first.append(result.first_event)
    await settle(tenant_id, sampler)
    print(f"Time to first byte, one client, {args.ttfb_samples} each, alternating (median)")
    print(
        f"  POST stream: first byte {ms(statistics.median(stream_ttfb))}, "
        f"first event {ms(statistics.median(stream_first))}"
    )
    print(f"  GET conversation (plain JSON): first byte {ms(statistics.median(get_ttfb))}")
    print(f"  ratio stream/GET {statistics.median(stream_ttfb) / statistics.median(get_ttfb):.2f}")
    print()
    run.add("TTFB: POST stream, first byte (median)", statistics.median(stream_ttfb) * 1000, "{:.1f} ms")
    run.add("TTFB: POST stream, first event (median)", statistics.median(stream_first) * 1000, "{:.1f} ms")
    run.add("TTFB: GET conversation (median)", statistics.median(get_ttfb) * 1000, "{:.1f} ms")
    run.add("TTFB: ratio stream/GET", statistics.median(stream_ttfb) / statistics.median(get_ttfb), "{:.2f}")

    _, rss_idle = sampler.now()
    client = psutil.Process()
    cpu_before = client.cpu_times()
    server_cpu_before = sampler.process.cpu_times()
    sampler.reset()
    profiler = py_spy_start(sampler.process.pid, per_run(args.py_spy, args, run)) if args.py_spy else None
    started = time.perf_counter()
    results = await asyncio.gather(*(stream(target, cid) for cid in conversations(args.streams)))
    elapsed = time.perf_counter() - started
    if profiler:
        py_spy_stop(profiler)
    await asyncio.sleep(0.2)
    peaks = sampler.snapshot()
    client_cpu = sum(client.cpu_times()[:2]) - sum(cpu_before[:2])
    server_cpu = sum(sampler.process.cpu_times()[:2]) - sum(server_cpu_before[:2])

    outcomes = collections.Counter(r.outcome for r in results)
    completed = sum(r.outcome == "ok" and r.contents == args.chunks for r in results)
    added = sorted(gap - args.chunk_delay_ms / 1000 for r in results for gap in r.gaps)
    ttfbs = sorted(r.ttfb for r in results if r.ttfb)
    p99 = percentile(added, 0.99) if added else float("inf")
    print(
        f"{args.streams} concurrent streams, {args.chunks} chunks {args.chunk_delay_ms} ms apart, one {server} process"
    )
    print(
        f"  completed: {completed}/{args.streams}"
        + ("" if completed == args.streams else f"   outcomes: {dict(outcomes)}")
    )
    print(
        f"  wall time {elapsed:.2f} s "
        f"(one stream alone: {args.chunks * args.chunk_delay_ms / 1000:g} s of engine delay)"
    )
    if added:
        print(
            f"  added gap between deltas (gap - {args.chunk_delay_ms} ms), {len(added)} gaps: "
            f"p50 {ms(statistics.median(added))}, "
            f"p90 {ms(percentile(added, 0.9))}, p99 {ms(p99)}, max {ms(added[-1])}"
        )
    if ttfbs:
        print(f"  first byte of the streams: p50 {ms(statistics.median(ttfbs))}, max {ms(ttfbs[-1])}")
    print(f"  peak threads of the server process: {peaks.threads}")
    print(f"  peak RSS {mib(peaks.rss)}: +{mib(peaks.rss - rss_idle)} over idle {mib(rss_idle)}")
    print(
        f"  peak PostgreSQL connections: {peaks.db_connections} to this database, {peaks.db_connections_all} "
        f"to the server in all (max_connections {sampler.max_connections})"
    )
    print(f"  CPU during the streams: server {server_cpu:.1f} s, this client {client_cpu:.1f} s, over {elapsed:.1f} s")
    print(
        f"  goals: all complete {verdict(completed == args.streams)}; p99 added gap <= 50 ms {verdict(p99 <= 0.05)}; "
        f"RSS growth <= 100 MB {verdict(peaks.rss - rss_idle <= 100 * 2**20)}"
    )
    name = f"{args.streams} streams"
    run.add(f"{name}: completed", f"{completed}/{args.streams}")
    run.add(f"{name}: wall time", elapsed, "{:.2f} s")
    if added:
        run.add(f"{name}: added gap p50", statistics.median(added) * 1000, "{:.1f} ms")
        run.add(f"{name}: added gap p90", percentile(added, 0.9) * 1000, "{:.1f} ms")
        run.add(f"{name}: added gap p99 (goal <= 50 ms)", p99 * 1000, "{:.1f} ms")
        run.add(f"{name}: added gap max", added[-1] * 1000, "{:.1f} ms")
    if ttfbs:
        run.add(f"{name}: first byte p50", statistics.median(ttfbs) * 1000, "{:.1f} ms")
        run.add(f"{name}: first byte max", ttfbs[-1] * 1000, "{:.1f} ms")
    run.add(f"{name}: peak threads", peaks.threads, "{:.0f}")
    run.add(f"{name}: idle RSS", rss_idle / 2**20, "{:.1f} MiB")
    run.add(f"{name}: peak RSS", peaks.rss / 2**20, "{:.1f} MiB")
    run.add(f"{name}: RSS growth (goal <= 100 MB)", (peaks.rss - rss_idle) / 2**20, "{:+.1f} MiB")
    run.add(f"{name}: peak PostgreSQL connections (db/all)", f"{peaks.db_connections}/{peaks.db_connections_all}")
    run.add(f"{name}: server CPU", server_cpu, "{:.1f} s")
    run.add(f"{name}: client CPU", client_cpu, "{:.1f} s")
    await settle(tenant_id, sampler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per reply")
    parser.add_argument("--chunk-delay-ms", type=int, default=20, help="the agent's chunk_delay_ms")
    parser.add_argument("--cycles", type=int, default=1000, help="connect/disconnect cycles")
    parser.add_argument("--cycle-concurrency", type=int, default=10)
    parser.add_argument("--ttfb-samples", type=int, default=20)
    parser.add_argument(
        "--db-pool", action="store_true", help="serve with psycopg's connection pool (pip install psycopg-pool)"
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="profile the server during the concurrent streams (raw stacks)"
    )
    add_server_arguments(parser)
    args = parser.parse_args()

    print_setup()
    question = question_for_chunks(args.chunks)

    def one_run(server: str, run: Run) -> None:
        count = 25 + WARM_CYCLES + args.cycles + args.ttfb_samples + args.streams
        tenant, agent, secret, ids = seed(label="streams", conversations=count, chunk_delay_ms=args.chunk_delay_ms)
        tenant_id = tenant.id
        print(f"Seeded tenant {tenant_id}: 1 agent, {count} conversations")
        try:
            with one_server(server, db_pool=args.db_pool) as running, ServerSampler(running.pid) as sampler:
                target = Target(
                    running.port, f"/tenants/{tenant_id}/api/v2/agents/{agent.id}/conversations", secret, question
                )
                asyncio.run(measure(args, target, tenant_id, ids, sampler, server, run))
                run.add("server CPU, whole run", cpu_seconds(sampler.process), "{:.1f} s")
            print(f"load average after: {load_text()}")
        finally:
            delete_tenant(tenant)
            print(f"Deleted tenant {tenant_id}")

    redis = "Redis stream log" if os.environ.get("REDIS_URL") else "in-process stream log"
    pool = "psycopg pool" if args.db_pool else "a connection per request"
    run_all(args, one_run, title=f"streams: {args.streams} streams, {args.cycles} cycles, {redis}, {pool}")


if __name__ == "__main__":
    main()
