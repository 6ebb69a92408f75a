"""Benchmark of post-and-wait under load: Parley against a bare proxy of the same model stream, N concurrent
`POST .../conversations/{cid}/messages` each (the answer comes once the reply has ended).

    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python bench/concurrent_posts.py
        [--engine openai|builtin --requests 50,200 --singles 3 --no-db-pool --server daphne|uvicorn|both --rounds N]

Starts a fake OpenAI-compatible model server (bench/fake_openai.py: `--chunks` content chunks
`--chunk-delay-ms` apart: 100 x 20 ms = 2 s by default), the bare reference (bench/bare_proxy.py: a raw ASGI
app that answers `POST .../messages` with the user's and the assistant's message once the model's stream has
ended, with the same `openai` SDK, and stores nothing) and ONE Parley server process (`--server`, uvicorn by
default, under `bench.settings`, with the psycopg pool unless `--no-db-pool`; `REDIS_URL`, if set, is its
stream log, as in production). Parley's agent is an `openai` agent of that model server (`--engine openai`,
the default) or a builtin agent with the same chunks and delay (`--engine builtin`). Seeds a fresh tenant
with one conversation per Parley request (the bare proxy ignores the path: it is sent the same ids) and
measures, on each side:

- the single-reply time: one request alone (median of `--singles`, after a warm-up; the sides alternate);
- for each workload of `--requests`, N concurrent requests on each side in turn (who goes first alternates):
  how many succeeded (HTTP 200 with a completed assistant message whose content is the model's whole reply,
  `bench.fake_openai.reply_text`; a builtin agent's reply contains the question instead), the total time and
  total / single-reply time, latency p50/p90/max, server CPU per request (the server's process tree),
  PostgreSQL and Redis CPU per request (all their processes: other work on the machine counts too), the
  server's peak threads and peak RSS (sampled every 50 ms), and the 1-min load average after.

It prints a line per side and workload, the table of Parley's runs (`--server both --rounds N`: daphne and
uvicorn interleaved, each run on a fresh tenant and fresh processes) with the figures only Parley has (where
each request's time went, from the stored timestamps; PostgreSQL connections; idle RSS; the client's and the
whole machine's CPU), then the table of both sides with Parley / bare (medians over the runs) and the goals.

Goals: (issue 3) all succeed, total < 2x the single-reply time, fewer than 40 threads; (issue 17) post-and-wait
server CPU per request <= 1.5x the bare proxy's streaming CPU per request: after each workload the bare
proxy also streams the same number of replies at once, for that yardstick (its post-and-wait costs less: one
response instead of an event per chunk).

The client is aiohttp, not httpx as in the other benchmarks: on this 2-CPU machine httpx's client spent 2.0 s
of CPU on 200 requests, beside the server and PostgreSQL; aiohttp's spends 0.2 s. Then it deletes the tenant.
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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

import aiohttp  # noqa: E402
import psutil  # noqa: E402
from asgiref.sync import sync_to_async  # noqa: E402
from django.db import connection  # noqa: E402

from bench.compare import Run, add_server_arguments, load_text, per_run, run_all  # noqa: E402
from bench.fake_openai import reply_text  # noqa: E402
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
from conversations.models import Message, MessageStatus, Role  # noqa: E402

WARM = 5  # concurrent requests on each side before anything is measured
CPU_GOAL = 1.5  # issue 17: Parley's server CPU per request, times the bare proxy's


@dataclass
class Side:
    """One side of the comparison: Parley, or the bare proxy."""

    name: str  # "parley" or "bare"
    url: str  # of a conversation's messages, "{}" for its id
    reply: str  # the assistant's whole reply, or (not `exact`) a part of it
    exact: bool
    sampler: ServerSampler
    cpu: StackCPU
    single: float = float("nan")  # the single-reply time, median


@dataclass
class Outcome:
    """Parley's figures of one workload that its goals (issue 3) look at."""

    succeeded: int
    count: int
    ratio: float  # total time / single-reply time
    threads: int

    @property
    def met(self) -> bool:
        return self.succeeded == self.count and self.ratio < 2 and self.threads < 40


async def post(
    client: aiohttp.ClientSession, side: Side, conversation_id: str, question: str, arrivals: dict | None = None
) -> tuple[str, float, str]:
    """(outcome, seconds, detail): outcome is "ok", "HTTP <status>", "reply <status>" or the exception's name."""
    start = time.perf_counter()
    try:
        async with client.post(side.url.format(conversation_id), json={"content": question}) as response:
            body = await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        return type(exc).__name__, time.perf_counter() - start, str(exc)[:200]
    elapsed = time.perf_counter() - start
    if response.status != 200:
        return f"HTTP {response.status}", elapsed, body[:300].decode(errors="replace")
    assistant = json.loads(body)["messages"][1]
    if arrivals is not None:
        arrivals[assistant["id"]] = time.time()
    content = assistant["content"]
    if assistant["status"] != MessageStatus.COMPLETED or not (
        content == side.reply if side.exact else side.reply in content
    ):
        return f"reply {assistant['status']}", elapsed, content[:100]
    return "ok", elapsed, ""


def busy_seconds(before, after) -> float:
    """CPU seconds the whole machine spent busy (not idle or waiting on I/O) between two psutil.cpu_times()."""
    idle = (after.idle - before.idle) + (after.iowait - before.iowait)
    return sum(after) - sum(before) - idle


def phases(sent_at: float, arrivals: dict[str, float]) -> dict[str, list[float]]:
    """Where each request's time went, from the stored timestamps (same clock as the client's)."""
    rows = Message.objects.filter(id__in=arrivals).values_list("id", "created_at", "completed_at")
    spans = {"sent -> turn started": [], "turn started -> reply stored": [], "reply stored -> response": []}
    for message_id, created_at, completed_at in rows:
        spans["sent -> turn started"].append(created_at.timestamp() - sent_at)
        spans["turn started -> reply stored"].append((completed_at - created_at).total_seconds())
        spans["reply stored -> response"].append(arrivals[message_id] - completed_at.timestamp())
    return spans


def conversations(take, count: int) -> list[str]:
    return [next(take) for _ in range(count)]


async def singles(
    client: aiohttp.ClientSession, sides: tuple[Side, Side], ids: list[str], question: str, comparison: Comparison
) -> None:
    """One request alone at a time, the sides alternating; each side's median is its single-reply time."""
    times: dict[str, list[float]] = {side.name: [] for side in sides}
    for number, conversation_id in enumerate(ids):
        for side in sides if number % 2 == 0 else sides[::-1]:
            outcome, elapsed, detail = await post(client, side, conversation_id, question)
            if outcome != "ok":
                raise RuntimeError(f"{side.name}: single request: {outcome} {detail}")
            times[side.name].append(elapsed)
    for side in sides:
        side.single = statistics.median(times[side.name])
        print(
            f"{side.name}: single-reply time {side.single:.3f} s "
            f"(median of {', '.join(f'{t:.3f}' for t in times[side.name])})"
        )
        comparison.add("1 post alone", side.name, "reply time (median)", side.single, "{:.3f} s")


async def burst(args, client: aiohttp.ClientSession, side: Side, ids: list[str], question: str, run: Run,
                comparison: Comparison) -> Outcome:  # fmt: skip
    """`len(ids)` concurrent posts on one side; its figures into `comparison` (and Parley's own into `run`)."""
    count = len(ids)
    parley = side.name == "parley"
    _, rss_idle = side.sampler.now()
    side.sampler.reset()
    side.cpu.start()
    client_before, machine_before = time.process_time(), psutil.cpu_times()
    profiler = None
    if args.py_spy and parley:
        path = per_run(args.py_spy, args, run)
        if len(args.requests) > 1:
            path = str(Path(path).with_name(f"{Path(path).stem}-{count}{Path(path).suffix}"))
        profiler = py_spy_start(side.sampler.process.pid, path)
    started, sent_at, arrivals = time.perf_counter(), time.time(), {}
    results = await asyncio.gather(*(post(client, side, cid, question, arrivals) for cid in ids))
    total = time.perf_counter() - started
    if profiler:
        py_spy_stop(profiler)
    spent = side.cpu.stop()
    client_cpu, machine = time.process_time() - client_before, busy_seconds(machine_before, psutil.cpu_times())
    await asyncio.sleep(0.1)  # one more sample of the server
    peaks = side.sampler.snapshot()

    outcomes = collections.Counter(outcome for outcome, _, _ in results)
    succeeded = outcomes["ok"]
    latencies = sorted(elapsed for _, elapsed, _ in results)
    p50, p90 = statistics.median(latencies), percentile(latencies, 0.9)
    ratio = total / side.single
    workload = f"{count} posts"
    print(
        f"{side.name}, {workload}: succeeded {succeeded}/{count}"
        + ("" if succeeded == count else f" {dict(outcomes)}")
        + f"; total {total:.2f} s = {ratio:.2f}x single; latency p50 {p50:.3f} s, p90 {p90:.3f} s, "
        f"max {latencies[-1]:.3f} s; CPU server {spent.server:.2f} s, PostgreSQL {spent.postgres:.2f} s, "
        f"Redis {spent.redis:.2f} s, client {client_cpu:.2f} s, whole machine {machine:.2f} s; "
        f"peak threads {peaks.threads}, peak RSS {mib(peaks.rss)}; load {load_text()}"
    )
    for outcome, _, detail in results:
        if outcome != "ok":
            print(f"  first failure: {outcome}: {detail}")
            break
    add = functools.partial(comparison.add, workload, side.name)
    add("succeeded", f"{succeeded}/{count}")
    add("total time", total, "{:.3f} s")
    add("total / single (goal < 2x)", ratio, "{:.2f}x")
    add("latency p50", p50, "{:.3f} s")
    add("latency p90", p90, "{:.3f} s")
    add("latency max", latencies[-1], "{:.3f} s")
    add(f"server CPU per request (goal <= {CPU_GOAL:g}x)", spent.server / count * 1000, "{:.1f} ms")
    add("PostgreSQL + Redis CPU per request", (spent.postgres + spent.redis) / count * 1000, "{:.2f} ms")
    add("peak threads (goal < 40)", peaks.threads, "{:.0f}")
    add("peak RSS", peaks.rss / 2**20, "{:.0f} MiB")
    add("1-min load average after", os.getloadavg()[0], "{:.2f}")
    if parley:
        prefix = f"{workload}: "
        for name, values in (await sync_to_async(phases)(sent_at, arrivals)).items():
            values.sort()
            print(f"    {name:<30} p50 {statistics.median(values):6.3f} s   max {values[-1]:6.3f} s")
            run.add(f"{prefix}{name} p50", statistics.median(values), "{:.3f} s")
            run.add(f"{prefix}{name} max", values[-1], "{:.3f} s")
        print(
            f"    peak PostgreSQL connections: {peaks.db_connections} to this database, "
            f"{peaks.db_connections_all} client connections to the server in all "
            f"(max_connections {side.sampler.max_connections})"
        )
        run.add(f"{prefix}latency min", latencies[0], "{:.3f} s")
        run.add(f"{prefix}CPU: client", client_cpu, "{:.1f} s")
        run.add(f"{prefix}CPU: whole machine", machine, "{:.1f} s")
        run.add(f"{prefix}RSS growth over idle", (peaks.rss - rss_idle) / 2**20, "{:+.1f} MiB")
        run.add(f"{prefix}peak PostgreSQL connections (db/all)", f"{peaks.db_connections}/{peaks.db_connections_all}")
    return Outcome(succeeded, count, ratio, peaks.threads)


async def measure(args, parley: Side, bare: Side, ids: list[str], question: str, secret: str, run: Run,
                  comparison: Comparison) -> bool:  # fmt: skip
    """Warm-up, single-reply times, then each workload on both sides; whether Parley met issue 3's goals."""
    take = iter(ids)
    connector = aiohttp.TCPConnector(limit=max(args.requests) + 10)
    async with aiohttp.ClientSession(
        # The bare proxy takes no key and ignores it.
        headers={"Authorization": f"Bearer {secret}"},
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=120),
    ) as client:
        warm_ids = conversations(take, WARM)
        for side in (parley, bare):
            warm = await asyncio.gather(*(post(client, side, cid, question) for cid in warm_ids))
            if failed := [(outcome, detail) for outcome, _, detail in warm if outcome != "ok"]:
                raise RuntimeError(f"{side.name}: warm-up requests: {failed}")
        await asyncio.sleep(0.5)
        idle_threads, idle_rss = parley.sampler.now()
        print(f"Parley idle after warm-up: {idle_threads} threads, RSS {mib(idle_rss)}")
        run.add("server idle: threads", idle_threads, "{:.0f}")
        run.add("server idle: RSS", idle_rss / 2**20, "{:.1f} MiB")

        await singles(client, (parley, bare), conversations(take, args.singles), question, comparison)
        run.add("single-reply time (median)", parley.single, "{:.3f} s")
        print()
        # Each workload on both sides in turn, who goes first alternating, on a machine left idle in between.
        met = True
        await asyncio.sleep(2)
        for number, count in enumerate(args.requests):
            batch = conversations(take, count)
            for side in (parley, bare) if number % 2 == 0 else (bare, parley):
                outcome = await burst(args, client, side, batch, question, run, comparison)
                if side is parley:
                    met = met and outcome.met
                    print(
                        f"  goals (issue 3): all succeed {verdict(outcome.succeeded == count)}; total < 2x single "
                        f"{verdict(outcome.ratio < 2)}; threads < 40 {verdict(outcome.threads < 40)}"
                    )
                await asyncio.sleep(2)
            await bare_streams(client, bare, batch, question, comparison)
            await asyncio.sleep(2)
            print()
    return met


async def bare_streams(client: aiohttp.ClientSession, bare: Side, ids: list[str], question: str,
                       comparison: Comparison) -> None:  # fmt: skip
    """The yardstick of issue 17's CPU goal: the bare proxy's CPU per request when it streams the same replies."""

    async def one(conversation_id: str) -> bool:
        url = bare.url.format(conversation_id).removesuffix("/messages") + "/stream"
        async with client.post(url, json={"content": question}) as response:
            return response.status == 200 and b'"status":"completed"' in await response.read()

    bare.cpu.start()
    done = await asyncio.gather(*(one(cid) for cid in ids))
    spent = bare.cpu.stop()
    if not all(done):
        raise RuntimeError(f"bare proxy: {done.count(False)} of {len(ids)} streams did not complete")
    print(f"bare, {len(ids)} streams: CPU server {spent.server:.2f} s ({spent.server / len(ids) * 1000:.1f} ms each)")
    per_request = spent.server / len(ids) * 1000
    comparison.add(f"{len(ids)} posts", "bare", "bare streaming: server CPU per request", per_request, "{:.1f} ms")


def print_cpu_goal(comparison: Comparison, counts: list[int]) -> None:
    """Issue 17's goal for each workload, from the medians in `comparison`."""
    label = f"server CPU per request (goal <= {CPU_GOAL:g}x)"
    print(
        f"\nGoal (issue 17): post-and-wait server CPU per request <= {CPU_GOAL:g}x the bare proxy's streaming CPU per "
        "request"
    )
    for count in counts:
        parley = comparison.rows.get((f"{count} posts", label), {}).get("parley")
        bare = comparison.rows.get((f"{count} posts", "bare streaming: server CPU per request"), {}).get("bare")
        if not parley or not bare:
            print(f"  {count} posts: not measured")
            continue
        parley, bare = statistics.median(parley), statistics.median(bare)
        ratio = parley / bare if bare else float("inf")
        print(f"  {count} posts: {parley:.1f} ms / {bare:.1f} ms = {ratio:.2f}x   {verdict(ratio <= CPU_GOAL)}")


def request_counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=ENGINES, default="openai", help="the agent's engine")
    parser.add_argument("--requests", type=request_counts, default=[200], help="workloads, e.g. 50,200")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per reply")
    parser.add_argument("--chunk-delay-ms", type=int, default=20, help="between chunks (engine and fake server)")
    parser.add_argument("--singles", type=int, default=3, help="requests alone on each side, for the single-reply time")
    parser.add_argument(
        "--db-pool", action=argparse.BooleanOptionalAction, default=True, help="serve with psycopg's connection pool"
    )
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        help="profile Parley during the concurrent requests (raw stacks; FILE-<requests>.txt with several workloads)",
    )
    add_server_arguments(parser)
    args = parser.parse_args()

    print_setup()
    question = question_for_chunks(args.chunks)
    expected = reply_text(args.chunks)
    redis = "Redis stream log" if os.environ.get("REDIS_URL") else "in-process stream log (no REDIS_URL)"
    pool = "psycopg pool" if args.db_pool else "a connection per request"
    comparison = Comparison(
        f"post-and-wait: {args.engine} engine, {args.chunks} chunks {args.chunk_delay_ms} ms apart; {redis}; "
        f"{pool}; one process each"
    )

    def one_run(server: str, run: Run) -> None:
        count = WARM + args.singles + sum(args.requests)
        tenant, agent, secret, ids = seed(
            label="concurrent_posts", conversations=count, chunk_delay_ms=args.chunk_delay_ms, **engine_of(args.engine)
        )
        tenant_id = tenant.id
        print(f"Seeded tenant {tenant_id}: 1 {args.engine} agent, {count} conversations")
        try:
            with ExitStack() as stack:
                running, reference = stack.enter_context(
                    parley_and_bare(server, db_pool=args.db_pool, chunks=args.chunks, delay_ms=args.chunk_delay_ms)
                )
                parley = Side(
                    name="parley",
                    url=f"{running.url}/tenants/{tenant_id}/api/v2/agents/{agent.id}/conversations/{{}}/messages",
                    # The builtin engine's plain answer quotes the question.
                    reply=expected if args.engine == "openai" else question,
                    exact=args.engine == "openai",
                    sampler=stack.enter_context(ServerSampler(running.pid)),
                    cpu=StackCPU(running.pid, connection.settings_dict["NAME"]),
                )
                bare = Side(
                    name="bare",
                    url=f"{reference.url}/bare/conversations/{{}}/messages",
                    reply=expected,
                    exact=True,
                    sampler=stack.enter_context(ServerSampler(reference.pid)),
                    cpu=StackCPU(reference.pid, connection.settings_dict["NAME"]),
                )
                met = asyncio.run(measure(args, parley, bare, ids, question, secret, run, comparison))
                run.add("server CPU, whole run", cpu_seconds(parley.sampler.process), "{:.1f} s")
                run.add("goals (issue 3)", verdict(met))
            stored = collections.Counter(
                Message.objects.filter(tenant_id=tenant_id, role=Role.ASSISTANT).values_list("status", flat=True)
            )
            print(f"Parley's assistant messages stored (all requests): {dict(stored)}")
            print(f"load average after: {load_text()}")
        finally:
            delete_tenant(tenant)
            print(f"Deleted tenant {tenant_id}")

    workloads = ",".join(str(count) for count in args.requests)
    runs = run_all(
        args,
        one_run,
        title=f"concurrent_posts: {args.engine} engine, Parley alone; {workloads} posts, {redis}, {pool}",
        exit_on_failure=False,
    )
    comparison.print()
    print_cpu_goal(comparison, args.requests)
    if failed := [run.name for run in runs if run.error]:
        raise SystemExit(f"failed runs: {', '.join(failed)}")


if __name__ == "__main__":
    main()
