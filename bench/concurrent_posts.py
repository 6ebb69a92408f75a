"""Benchmark of post-and-wait under load: many concurrent `POST .../conversations/{cid}/messages`.

    DATABASE_URL=postgres://... .venv/bin/python bench/concurrent_posts.py [--requests 200 --db-pool]
        [--server daphne|uvicorn|both --rounds N]

Seeds a fresh tenant with one builtin agent whose replies are slow (`chunk_delay_ms` per chunk; the
question is sized so that the reply has `--chunks` chunks: 100 x 20 ms = 2 s by default) and one
conversation per request, serves the project with ONE server process (`--server`, uvicorn by default) under
`bench.settings`, and measures:

- the single-reply time: one request alone (median of `--singles`, after a warm-up request);
- the total time of `--requests` concurrent requests, one per conversation, and how many succeeded
  (HTTP 200 with a completed assistant message whose content is the whole reply);
- the server process's peak thread count and peak RSS (sampled every 50 ms), and the peak number of
  PostgreSQL connections (to this database, and to the whole server, whose max_connections is shared).

The client is aiohttp, not httpx as in the other benchmarks: on this 2-CPU machine httpx's client
spent 2.0 s of CPU on the 200 requests, beside the server and PostgreSQL; aiohttp's spends 0.2 s.

Goal (issue 3): all succeed in under 2x the single-reply time, with fewer than 40 threads.
Then it deletes the tenant.

With `--server both` it runs daphne and uvicorn in turn (`--rounds` times each, interleaved), each run on a
fresh tenant and a fresh server process, and ends with one table of both (with the server's CPU time and
the load average at the start and end of each run).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

import aiohttp  # noqa: E402
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
from conversations.models import Message, MessageStatus, Role  # noqa: E402


async def post(
    client: aiohttp.ClientSession, url: str, question: str, arrivals: dict | None = None
) -> tuple[str, float, str]:
    """(outcome, seconds, detail): outcome is "ok", "HTTP <status>" or the exception's name."""
    start = time.perf_counter()
    try:
        async with client.post(url, json={"content": question}) as response:
            body = await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        return type(exc).__name__, time.perf_counter() - start, str(exc)[:200]
    elapsed = time.perf_counter() - start
    if response.status != 200:
        return f"HTTP {response.status}", elapsed, body[:300].decode(errors="replace")
    assistant = json.loads(body)["messages"][1]
    if arrivals is not None:
        arrivals[assistant["id"]] = time.time()
    if assistant["status"] != MessageStatus.COMPLETED or question not in assistant["content"]:
        return f"reply {assistant['status']}", elapsed, assistant["content"][:100]
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


async def measure(args: argparse.Namespace, base: str, tenant_id: str, agent_id: str, secret: str,
                  conversation_ids: list[str], question: str, sampler: ServerSampler, server: str,
                  run: Run) -> bool:  # fmt: skip
    url = f"{base}/tenants/{tenant_id}/api/v2/agents/{agent_id}/conversations/{{}}/messages"
    connector = aiohttp.TCPConnector(limit=args.requests + 10)
    timeout = aiohttp.ClientTimeout(total=120)
    warm, singles, loaded = (
        conversation_ids[0],
        conversation_ids[1 : 1 + args.singles],
        conversation_ids[1 + args.singles :],
    )
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {secret}"}, connector=connector, timeout=timeout
    ) as client:
        outcome, elapsed, detail = await post(client, url.format(warm), question)
        if outcome != "ok":
            raise RuntimeError(f"warm-up request: {outcome} {detail}")
        await asyncio.sleep(0.5)
        idle_threads, idle_rss = sampler.now()

        single_times = []
        for conversation_id in singles:
            outcome, elapsed, detail = await post(client, url.format(conversation_id), question)
            if outcome != "ok":
                raise RuntimeError(f"single request: {outcome} {detail}")
            single_times.append(elapsed)
        single = statistics.median(single_times)

        await asyncio.sleep(0.5)
        sampler.reset()
        server_cpu, client_cpu, machine = (
            sum(sampler.process.cpu_times()[:2]),
            time.process_time(),
            psutil.cpu_times(),
        )
        profiler = py_spy_start(sampler.process.pid, per_run(args.py_spy, args, run)) if args.py_spy else None
        started, sent_at, arrivals = time.perf_counter(), time.time(), {}
        results = await asyncio.gather(*(post(client, url.format(cid), question, arrivals) for cid in loaded))
        total = time.perf_counter() - started
        if profiler:
            py_spy_stop(profiler)
        await asyncio.sleep(0.2)  # one more sample after the last response
        peaks = sampler.snapshot()
        server_cpu = sum(sampler.process.cpu_times()[:2]) - server_cpu
        client_cpu = time.process_time() - client_cpu
        machine = busy_seconds(machine, psutil.cpu_times())

    outcomes = collections.Counter(outcome for outcome, _, _ in results)
    succeeded = outcomes["ok"]
    latencies = sorted(elapsed for _, elapsed, _ in results)
    ratio = total / single
    print(
        f"Reply: {args.chunks} chunks x {args.chunk_delay_ms} ms = "
        f"{args.chunks * args.chunk_delay_ms / 1000:g} s of engine delay"
    )
    print(
        f"  single-reply time (one request alone): {single:.3f} s "
        f"(median of {', '.join(f'{t:.3f}' for t in single_times)})"
    )
    print(f"  server idle after warm-up: {idle_threads} threads, RSS {mib(idle_rss)}")
    print()
    print(f"{args.requests} concurrent post-and-wait requests, {args.requests} conversations, one {server} process")
    print(
        f"  succeeded: {succeeded}/{args.requests}"
        + ("" if succeeded == args.requests else f"   outcomes: {dict(outcomes)}")
    )
    print(f"  total time: {total:.3f} s = {ratio:.2f}x the single-reply time")
    print(
        f"  per-request latency: min {latencies[0]:.3f} s, p50 {statistics.median(latencies):.3f} s, "
        f"p90 {percentile(latencies, 0.9):.3f} s, max {latencies[-1]:.3f} s"
    )
    run.add("single-reply time (median)", single, "{:.3f} s")
    run.add("server idle: threads", idle_threads, "{:.0f}")
    run.add("server idle: RSS", idle_rss / 2**20, "{:.1f} MiB")
    run.add(f"{args.requests} posts: succeeded", f"{succeeded}/{args.requests}")
    run.add(f"{args.requests} posts: total time", total, "{:.3f} s")
    run.add(f"{args.requests} posts: total / single (goal < 2)", ratio, "{:.2f}x")
    run.add("latency min", latencies[0], "{:.3f} s")
    run.add("latency p50", statistics.median(latencies), "{:.3f} s")
    run.add("latency p90", percentile(latencies, 0.9), "{:.3f} s")
    run.add("latency max", latencies[-1], "{:.3f} s")
    for name, values in (await sync_to_async(phases)(sent_at, arrivals)).items():
        values.sort()
        print(f"    {name:<30} p50 {statistics.median(values):6.3f} s   max {values[-1]:6.3f} s")
        run.add(f"{name} p50", statistics.median(values), "{:.3f} s")
        run.add(f"{name} max", values[-1], "{:.3f} s")
    print(
        f"  CPU time during the requests ({total:.1f} s, {os.cpu_count()} CPUs): server process {server_cpu:.1f} s, "
        f"this client {client_cpu:.1f} s, the whole machine {machine:.1f} s"
    )
    print(f"  peak threads of the server process: {peaks.threads}   ({peaks.samples} samples, every 50 ms)")
    print(f"  peak RSS of the server process: {mib(peaks.rss)}   (+{mib(peaks.rss - idle_rss)} over idle)")
    print(
        f"  peak PostgreSQL connections: {peaks.db_connections} to this database, "
        f"{peaks.db_connections_all} client connections to the server in all (max_connections "
        f"{sampler.max_connections})"
    )
    for outcome, _, detail in results:
        if outcome != "ok":
            print(f"  first failure: {outcome}: {detail}")
            break
    run.add("CPU during the posts: server", server_cpu, "{:.1f} s")
    run.add("CPU during the posts: client", client_cpu, "{:.1f} s")
    run.add("CPU during the posts: whole machine", machine, "{:.1f} s")
    run.add("peak threads (goal < 40)", peaks.threads, "{:.0f}")
    run.add("peak RSS", peaks.rss / 2**20, "{:.1f} MiB")
    run.add("RSS growth over idle", (peaks.rss - idle_rss) / 2**20, "{:+.1f} MiB")
    run.add("peak PostgreSQL connections (db/all)", f"{peaks.db_connections}/{peaks.db_connections_all}")
    met_all = succeeded == args.requests
    met_time = ratio < 2
    met_threads = peaks.threads < 40
    print(
        f"  goals: all succeed {verdict(met_all)}; total < 2x single {verdict(met_time)}; "
        f"threads < 40 {verdict(met_threads)}"
    )
    return met_all and met_time and met_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per reply")
    parser.add_argument("--chunk-delay-ms", type=int, default=20, help="the agent's chunk_delay_ms")
    parser.add_argument("--singles", type=int, default=3, help="requests alone, for the single-reply time")
    parser.add_argument(
        "--db-pool", action="store_true", help="serve with psycopg's connection pool (pip install psycopg-pool)"
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="profile the server during the concurrent requests (raw stacks)"
    )
    add_server_arguments(parser)
    args = parser.parse_args()

    print_setup()
    question = question_for_chunks(args.chunks)

    def one_run(server: str, run: Run) -> None:
        tenant, agent, secret, conversation_ids = seed(
            label="concurrent_posts",
            conversations=1 + args.singles + args.requests,
            chunk_delay_ms=args.chunk_delay_ms,
        )
        tenant_id = tenant.id
        print(f"Seeded tenant {tenant_id}: 1 agent, {len(conversation_ids)} conversations")
        try:
            with one_server(server, db_pool=args.db_pool) as running, ServerSampler(running.pid) as sampler:
                met = asyncio.run(
                    measure(
                        args, running.url, tenant_id, agent.id, secret, conversation_ids, question, sampler, server, run
                    )
                )
                run.add("server CPU, whole run", cpu_seconds(sampler.process), "{:.1f} s")
                run.add("goals", "met" if met else "MISSED")
            stored = collections.Counter(
                Message.objects.filter(tenant_id=tenant_id, role=Role.ASSISTANT).values_list("status", flat=True)
            )
            print(f"  assistant messages stored (all requests): {dict(stored)}")
            print(f"load average after: {load_text()}")
        finally:
            delete_tenant(tenant)
            print(f"Deleted tenant {tenant_id}")

    redis = "REDIS_URL set" if os.environ.get("REDIS_URL") else "no REDIS_URL"
    pool = "psycopg pool" if args.db_pool else "a connection per request"
    run_all(args, one_run, title=f"concurrent_posts: {args.requests} posts, {redis}, {pool}")


if __name__ == "__main__":
    main()
