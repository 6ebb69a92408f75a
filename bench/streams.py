"""Benchmark of SSE streaming: Parley against a bare proxy of the same model stream, N concurrent streams each.

    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/streams.py
        [--engine openai|builtin --streams 10,50,200,500 --cycles 1000 --no-db-pool --server daphne|uvicorn
         --rounds N --py-spy FILE]

Starts a fake OpenAI-compatible model server (bench/fake_openai.py: `--chunks` content chunks
`--chunk-delay-ms` apart, a usage chunk, `[DONE]`), the bare reference (bench/bare_proxy.py: a raw ASGI app
that proxies that stream to its client as server-sent events with the same `openai` SDK and stores
nothing) and ONE Parley server process (`--server`, uvicorn by default, under `bench.settings`, with the
psycopg pool unless `--no-db-pool`; `REDIS_URL`, if set, is its stream log, as in production). Parley's
agent is an `openai` agent of that model server (`--engine openai`, the default) or a builtin agent with the
same chunks and delay (`--engine builtin`). Seeds a fresh tenant with one conversation per stream and
measures from a client in this process, which speaks HTTP/1.1 over raw asyncio streams (no HTTP library, no
JSON parsing per event) so that its own cost stays small next to the gaps it measures:

1. for each workload of `--streams`, N concurrent streams on each side in turn (who goes first alternates):
   completed (all deltas, then done), time to first content p50/p99, added gap between consecutive deltas
   (minus the model's delay) p50/p99, wall time, server CPU per stream (the server's process tree, until
   its last generation has stored its end), PostgreSQL (its backends of this database, and its own
   processes) and Redis CPU per stream, peak RSS, and the 1-min load average after;
2. Parley's memory over `--cycles` connect/disconnect cycles (open a stream, read its first event,
   disconnect; the generation goes on, as by default): RSS before and after, once every generation has
   ended (goal: within +5%);
3. Parley's time to first byte of a stream against a plain JSON GET of the conversation, alternating.

It ends with the table of both sides and Parley / bare, medians over `--rounds`. Goals (issue 17): server
CPU per stream <= 1.5x the bare proxy; first content p50 <= 2x; added gap p99 at 500 <= 50 ms; PostgreSQL +
Redis CPU per stream <= 5 ms; (issue 4) all complete, RSS growth <= 100 MB. Then it deletes the tenant.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

from asgiref.sync import sync_to_async  # noqa: E402
from django.db import connection  # noqa: E402

from bench.compare import Run, add_server_arguments, load_text, run_all  # noqa: E402
from bench.llm import ENGINES, Comparison, StackCPU  # noqa: E402
from bench.rest_list import percentile, verdict  # noqa: E402  (sets Django up)
from bench.sampling import (  # noqa: E402
    ServerSampler,
    cpu_seconds,
    delete_tenant,
    engine_of,
    mib,
    parley_and_bare,
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
    first_content: float = 0.0  # request sent -> first content delta
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
            if not result.first_content and CONTENT in complete:
                result.first_content = now - start
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


async def measure_memory(
    args, target: Target, tenant_id: str, take: Iterator[str], sampler: ServerSampler, run: Run
) -> None:
    """Parley's RSS over `--cycles` connect/disconnect cycles, and its time to first byte against a GET."""
    threads_first, rss_first = await settle(tenant_id, sampler)
    await cycles(target, conversations(take, WARM_CYCLES), args.cycle_concurrency)
    threads_before, rss_before = await settle(tenant_id, sampler)
    print(
        f"Server after warm-up: {threads_first} threads, RSS {mib(rss_first)}; after {WARM_CYCLES} more cycles "
        f"({args.cycle_concurrency} at a time): {threads_before} threads, RSS {mib(rss_before)}"
    )
    run.add("idle RSS after warm-up", rss_first / 2**20, "{:.1f} MiB")

    started = time.perf_counter()
    outcomes = await cycles(target, conversations(take, args.cycles), args.cycle_concurrency)
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


async def measure_ttfb(args, target: Target, tenant_id: str, take: Iterator[str], sampler: ServerSampler, run: Run):
    stream_ttfb, stream_first, get_ttfb = [], [], []
    for i, cid in enumerate(conversations(take, args.ttfb_samples)):
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


@dataclass
class Side:
    """One side of the comparison: Parley, or the bare proxy (which stores nothing, so has no tenant)."""

    name: str  # "parley" or "bare"
    target: Target
    sampler: ServerSampler
    cpu: StackCPU
    tenant_id: str = ""


async def generations_ended(tenant_id: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and await sync_to_async(in_progress_count)(tenant_id):
        await asyncio.sleep(0.05)


async def burst(args, side: Side, ids: list[str], comparison: Comparison) -> None:
    """`len(ids)` concurrent streams on one side; its figures into `comparison`."""
    count = len(ids)
    _, rss_idle = side.sampler.now()
    side.sampler.reset()
    side.cpu.start()
    client_before = time.process_time()
    profile = args.py_spy and side.name == "parley"
    profiler = py_spy_start(side.sampler.process.pid, _numbered(args.py_spy, count)) if profile else None
    started = time.perf_counter()
    results = await asyncio.gather(*(stream(side.target, cid) for cid in ids))
    elapsed = time.perf_counter() - started
    if side.tenant_id:  # what a generation does after its last event (storing it) is its cost too
        await generations_ended(side.tenant_id)
    if profiler:
        py_spy_stop(profiler)
    spent = side.cpu.stop()
    client = time.process_time() - client_before
    await asyncio.sleep(0.1)  # one more sample of the server
    peaks = side.sampler.snapshot()

    outcomes = collections.Counter(r.outcome for r in results)
    completed = sum(r.outcome == "ok" and r.contents == args.chunks for r in results)
    added = sorted(gap - args.chunk_delay_ms / 1000 for r in results for gap in r.gaps)
    first = sorted(r.first_content for r in results if r.first_content)
    workload = f"{count} streams"
    print(
        f"{side.name}, {workload}: completed {completed}/{count}"
        + ("" if completed == count else f" {dict(outcomes)}")
        + f"; wall {elapsed:.2f} s; first content p50 {ms(_quantile(first, 0.5))}, p99 {ms(_quantile(first, 0.99))}"
        + (f"; added gap p50 {ms(_quantile(added, 0.5))}, p99 {ms(_quantile(added, 0.99))}" if added else "")
        + f"; CPU server {spent.server:.2f} s ({spent.server_system:.2f} s system), "
        f"PostgreSQL {spent.postgres:.2f} s, Redis {spent.redis:.2f} s, client {client:.2f} s; "
        f"peak RSS {mib(peaks.rss)}; load {load_text()}"
    )
    add = functools.partial(comparison.add, workload, side.name)
    add("completed", f"{completed}/{count}")
    add("first byte p50", _quantile(sorted(r.ttfb for r in results if r.ttfb), 0.5) * 1000, "{:.0f} ms")
    add("first content p50", _quantile(first, 0.5) * 1000, "{:.0f} ms")
    add("first content p99", _quantile(first, 0.99) * 1000, "{:.0f} ms")
    if added:
        add("added gap p50", _quantile(added, 0.5) * 1000, "{:.1f} ms")
        add("added gap p99", _quantile(added, 0.99) * 1000, "{:.1f} ms")
    add("wall time", elapsed, "{:.2f} s")
    add("server CPU per stream", spent.server / count * 1000, "{:.1f} ms")
    add("PostgreSQL + Redis CPU per stream", (spent.postgres + spent.redis) / count * 1000, "{:.2f} ms")
    add("peak RSS", peaks.rss / 2**20, "{:.0f} MiB")
    add("RSS growth", (peaks.rss - rss_idle) / 2**20, "{:+.0f} MiB")
    add("1-min load average after", os.getloadavg()[0], "{:.2f}")


def _quantile(values: list[float], fraction: float) -> float:
    return percentile(values, fraction) if values else float("nan")


def _numbered(path: str, count: int) -> str:
    file = Path(path)
    return str(file.with_name(f"{file.stem}-{count}{file.suffix}"))


def conversations(take: Iterator[str], count: int) -> list[str]:
    return [next(take) for _ in range(count)]


async def measure(args, parley: Side, bare: Side, ids: list[str], run: Run, comparison: Comparison) -> None:
    take = iter(ids)
    # Warm-up: every code path once, so that imports and caches are not counted as growth.
    await cycles(parley.target, conversations(take, 20), 5)
    for side in (parley, bare):
        warm = await asyncio.gather(*(stream(side.target, cid) for cid in conversations(take, 5)))
        if any(r.outcome != "ok" or r.contents != args.chunks for r in warm):
            raise RuntimeError(f"{side.name}: warm-up streams: {[(r.outcome, r.contents) for r in warm]}")
    await plain_get(parley.target, ids[0])
    await settle(parley.tenant_id, parley.sampler)
    # Each workload on both sides in turn, who goes first alternating, on a machine left idle in between;
    # before the cycles, whose thousands of rows (with no autovacuum here) would slow what follows.
    for number, count in enumerate(args.streams):
        for side in (parley, bare) if number % 2 == 0 else (bare, parley):
            await burst(args, side, conversations(take, count), comparison)
            await asyncio.sleep(2)
    if args.cycles:
        await measure_memory(args, parley.target, parley.tenant_id, take, parley.sampler, run)
    if args.ttfb_samples:
        await measure_ttfb(args, parley.target, parley.tenant_id, take, parley.sampler, run)


def stream_counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=ENGINES, default="openai", help="the agent's engine")
    parser.add_argument("--streams", type=stream_counts, default=[10, 50, 200, 500], help="workloads, e.g. 50,500")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per reply")
    parser.add_argument("--chunk-delay-ms", type=int, default=20, help="between chunks (engine and fake server)")
    parser.add_argument("--cycles", type=int, default=1000, help="connect/disconnect cycles (0: none)")
    parser.add_argument("--cycle-concurrency", type=int, default=10)
    parser.add_argument("--ttfb-samples", type=int, default=20, help="(0: none)")
    parser.add_argument(
        "--db-pool", action=argparse.BooleanOptionalAction, default=True, help="serve with psycopg's connection pool"
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="profile Parley during each burst (raw stacks; FILE-<streams>.txt)"
    )
    add_server_arguments(parser)
    args = parser.parse_args()

    print_setup()
    question = question_for_chunks(args.chunks)
    comparison = Comparison(
        f"{args.engine} engine, {args.chunks} chunks {args.chunk_delay_ms} ms apart; "
        f"{'Redis stream log' if os.environ.get('REDIS_URL') else 'in-process stream log'}; "
        f"{'psycopg pool' if args.db_pool else 'a connection per request'}; one process each"
    )

    def one_run(server: str, run: Run) -> None:
        count = 30 + (WARM_CYCLES + args.cycles if args.cycles else 0) + args.ttfb_samples + 2 * sum(args.streams)
        tenant, agent, secret, ids = seed(
            label="streams", conversations=count, chunk_delay_ms=args.chunk_delay_ms, **engine_of(args.engine)
        )
        tenant_id = tenant.id
        print(f"Seeded tenant {tenant_id}: 1 {args.engine} agent, {count} conversations")
        try:
            with ExitStack() as stack:
                running, reference = stack.enter_context(
                    parley_and_bare(server, db_pool=args.db_pool, chunks=args.chunks, delay_ms=args.chunk_delay_ms)
                )
                prefix = f"/tenants/{tenant.id}/api/v2/agents/{agent.id}/conversations"
                parley = Side(
                    "parley",
                    Target(running.port, prefix, secret, question),
                    stack.enter_context(ServerSampler(running.pid)),
                    StackCPU(running.pid, connection.settings_dict["NAME"]),
                    tenant.id,
                )
                bare = Side(
                    "bare",
                    Target(reference.port, "/bare/conversations", "-", question),
                    stack.enter_context(ServerSampler(reference.pid)),
                    StackCPU(reference.pid, connection.settings_dict["NAME"]),
                )
                asyncio.run(measure(args, parley, bare, ids, run, comparison))
                run.add("server CPU, whole run", cpu_seconds(parley.sampler.process), "{:.1f} s")
            print(f"load average after: {load_text()}")
        finally:
            delete_tenant(tenant)
            print(f"Deleted tenant {tenant_id}")

    runs = run_all(args, one_run, title=f"streams: {args.engine} engine, Parley alone", exit_on_failure=False)
    comparison.print()
    if failed := [run.name for run in runs if run.error]:
        raise SystemExit(f"failed runs: {', '.join(failed)}")


if __name__ == "__main__":
    main()
