"""Benchmark of the conversation list: DRF endpoint against a bare async view, and page 1 against a deep page.

    DATABASE_URL=postgres://... .venv/bin/python bench/rest_list.py [--rounds 5 --seconds 5 --concurrency 8]
        [--server daphne|uvicorn]

Seeds a fresh tenant with one agent and 10,000 conversations (distinct `updated_at`), serves the project
with one server process (`--server`, uvicorn by default) under `bench.settings` (which adds the bare view),
and measures in one run, alternating:

- throughput: median req/s of `GET .../agents/{aid}/conversations?limit=50` against the bare view that runs
  the same query with `.values()` and returns `JsonResponse` (goal: list >= 0.5x bare);
- latency: page 1 against the page 9,000 rows deep, reached by walking the cursor (goal: deep <= 1.5x).

It prints EXPLAIN ANALYZE of the deep-page query as the list endpoint runs it, then deletes the tenant.
Figures depend on the machine's load: both sides of each ratio are measured in turns for that reason.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

import httpx  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.test import APIRequestFactory  # noqa: E402

from agents.models import Agent  # noqa: E402
from conversations.apis import ConversationViewSet  # noqa: E402
from conversations.models import Conversation  # noqa: E402
from conversations.selectors import conversation_list  # noqa: E402
from tenants.models import Tenant  # noqa: E402
from tenants.services import api_key_create, tenant_create  # noqa: E402
from tests.servers import serve  # noqa: E402

LIMIT = 50
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise


def seed(count: int, siblings: int = 0) -> tuple[Tenant, Agent, str]:
    tenant = tenant_create(tenant_id=f"bench-{secrets.token_hex(4)}", name="rest_list benchmark")
    _, secret = api_key_create(tenant=tenant, name="bench")
    agent = Agent.objects.create(tenant=tenant, name="Bench agent")
    now = timezone.now()
    if siblings:  # another agent's conversations, interleaved in time with the measured ones
        other = Agent.objects.create(tenant=tenant, name="Sibling agent")
        step = timedelta(seconds=count / siblings)
        Conversation.objects.bulk_create(
            (
                Conversation(
                    tenant=tenant,
                    agent=other,
                    name=f"Sibling conversation {i:05d}",
                    updated_at=now - step * i - timedelta(milliseconds=500),
                )
                for i in range(siblings)
            ),
            batch_size=1000,
        )
    # Conversation i is the i-th newest: distinct updated_at, one second apart.
    Conversation.objects.bulk_create(
        (
            Conversation(
                tenant=tenant,
                agent=agent,
                name=f"Bench conversation {i:05d}",
                created_at=now - timedelta(seconds=i),
                updated_at=now - timedelta(seconds=i),
            )
            for i in range(count)
        ),
        batch_size=1000,
    )
    with connection.cursor() as cursor:  # fresh statistics, as autovacuum would soon have them
        cursor.execute(f"ANALYZE {Conversation._meta.db_table}")
    return tenant, agent, secret


async def throughput(client: httpx.AsyncClient, url: str, *, seconds: float, concurrency: int) -> float:
    """Requests per second from `concurrency` clients looping on `url` for `seconds`."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            done += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def timed_get(client: httpx.AsyncClient, url: str, params: dict) -> float:
    start = time.perf_counter()
    response = await client.get(url, params=params)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return elapsed


async def deep_cursor(client: httpx.AsyncClient, url: str, depth: int) -> str:
    """The `next` cursor after the first `depth` rows, walked page by page as a client would."""
    cursor, walked = None, 0
    while walked < depth:
        limit = min(100, depth - walked)
        body = (await client.get(url, params={"limit": limit, **({"next": cursor} if cursor else {})})).json()
        walked += len(body["items"])
        cursor = body["next"]
    return cursor


def deep_page_plan(tenant: Tenant, agent: Agent, cursor: str | None) -> list[str]:
    """EXPLAIN ANALYZE of the exact SQL the list endpoint's paginator sends for this cursor."""
    params = {"limit": LIMIT, **({"next": cursor} if cursor else {})}
    request = Request(APIRequestFactory().get("/", params))
    paginator = ConversationViewSet.pagination_class()
    with CaptureQueriesContext(connection) as captured:
        paginator.paginate_queryset(conversation_list(tenant=tenant, agent=agent), request)
    (sql,) = [q["sql"] for q in captured.captured_queries if "ORDER BY" in q["sql"]]
    with connection.cursor() as db:
        db.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        return [sql] + [row[0] for row in db.fetchall()]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def measure(args: argparse.Namespace, base: str, tenant: Tenant, agent: Agent, secret: str) -> str:
    list_url = f"{base}/tenants/{tenant.id}/api/v2/agents/{agent.id}/conversations?limit={LIMIT}"
    bare_url = f"{base}/bench/tenants/{tenant.id}/agents/{agent.id}/conversations"
    headers = {"Authorization": f"Bearer {secret}"}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        listed = (await client.get(list_url)).json()["items"]
        bare = (await client.get(bare_url)).json()["items"]
        assert [c["id"] for c in listed] == [c["id"] for c in bare], "list and bare view disagree"
        assert len(listed) == LIMIT

        # Warm both sides (imports, URL resolver, connections) before anything is counted.
        for url in (list_url, bare_url):
            await throughput(client, url, seconds=1, concurrency=args.concurrency)

        rows = []
        for round_ in range(args.rounds):
            sides = [("list", list_url), ("bare", bare_url)]
            if round_ % 2:
                sides.reverse()  # ABBA: neither side always runs first in a round
            rates = {
                name: await throughput(client, url, seconds=args.seconds, concurrency=args.concurrency)
                for name, url in sides
            }
            rows.append((rates["list"], rates["bare"]))
            print(
                f"  round {round_ + 1}: list {rates['list']:7.1f} req/s   bare {rates['bare']:7.1f} req/s   "
                f"ratio {rates['list'] / rates['bare']:.2f}",
                flush=True,
            )

        page_url = list_url.split("?")[0]
        cursor = await deep_cursor(client, page_url, args.depth)
        first_deep = (await client.get(page_url, params={"limit": LIMIT, "next": cursor})).json()["items"][0]
        assert first_deep["name"] == f"Bench conversation {args.depth:05d}", first_deep["name"]

        page1_times, deep_times = [], []
        for _ in range(5):  # warm-up
            await timed_get(client, page_url, {"limit": LIMIT})
            await timed_get(client, page_url, {"limit": LIMIT, "next": cursor})
        for i in range(args.samples):
            pair = [(page1_times, {"limit": LIMIT}), (deep_times, {"limit": LIMIT, "next": cursor})]
            for times, params in pair if i % 2 == 0 else reversed(pair):
                times.append(await timed_get(client, page_url, params))

    list_rate = statistics.median(r[0] for r in rows)
    bare_rate = statistics.median(r[1] for r in rows)
    rate_ratio = list_rate / bare_rate
    round_ratio = statistics.median(r[0] / r[1] for r in rows)
    page1_ms = statistics.median(page1_times) * 1000
    deep_ms = statistics.median(deep_times) * 1000
    latency_ratio = deep_ms / page1_ms

    print()
    print(
        f"Throughput, limit={LIMIT}, {args.concurrency} concurrent clients, {args.rounds} rounds x {args.seconds:g} s "
        "per side, alternating (median of rounds)"
    )
    print(f"  {'DRF list endpoint':<28}{list_rate:9.1f} req/s")
    print(f"  {'bare async view (.values())':<28}{bare_rate:9.1f} req/s")
    print(
        f"  ratio list/bare {rate_ratio:.2f} (median of the rounds' own ratios {round_ratio:.2f})   "
        f"goal >= 0.50: {verdict(rate_ratio >= 0.5)}"
    )
    print()
    print(f"Latency, one client, {args.samples} requests per side, alternating")
    print(f"  {'':<28}{'median':>10}{'p90':>10}{'min':>10}")
    for name, times in (("page 1", page1_times), (f"page {args.depth:,} rows deep", deep_times)):
        print(
            f"  {name:<28}{statistics.median(times) * 1000:8.2f}ms{percentile(times, 0.9) * 1000:8.2f}ms"
            f"{min(times) * 1000:8.2f}ms"
        )
    print(f"  ratio deep/page 1 {latency_ratio:.2f}   goal <= 1.50: {verdict(latency_ratio <= 1.5)}")
    return cursor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--depth", type=int, default=9_000, help="rows before the deep page")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0, help="per side per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=300, help="latency requests per side")
    parser.add_argument(
        "--sibling-conversations", type=int, default=0, help="also seed another agent of the tenant with this many"
    )
    parser.add_argument(
        "--db-pool", action="store_true", help="serve with psycopg's connection pool (pip install psycopg-pool)"
    )
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="uvicorn", help="the ASGI server")
    args = parser.parse_args()

    db = connection.settings_dict
    print(
        f"Database {db['NAME']} on {db['HOST'] or 'local socket'}:{db['PORT']}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    tenant, agent, secret = seed(args.conversations, args.sibling_conversations)
    tenant_id = tenant.id
    siblings = f" (+ {args.sibling_conversations:,} of a sibling agent)" if args.sibling_conversations else ""
    print(
        f"Seeded tenant {tenant_id}: {args.conversations:,} conversations{siblings} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    stack = ExitStack()
    env = {"DJANGO_SETTINGS_MODULE": "bench.settings", "BENCH_DB_POOL": "1" if args.db_pool else None}
    try:
        server = stack.enter_context(serve(args.server, env=env, log_path=workdir / f"{args.server}.log"))
        connections = "psycopg pool" if args.db_pool else "a new database connection per request (DB_CONN_MAX_AGE=0)"
        print(
            f"{args.server} (one process) on 127.0.0.1:{server.port}, DJANGO_SETTINGS_MODULE=bench.settings, "
            f"{connections}, log {server.log_path}"
        )
        print()
        cursor = asyncio.run(measure(args, server.url, tenant, agent, secret))
        print()
        plan = deep_page_plan(tenant, agent, cursor)
        print(f"EXPLAIN (ANALYZE, BUFFERS) of the deep page as the list endpoint sends it:\n  {plan[0]}")
        print("\n".join(f"    {line}" for line in plan[1:]))
        scan = next((line for line in plan[1:] if "Scan" in line), "")
        index_cond = next((line for line in plan[1:] if "Index Cond" in line), "")
        index = next((name for name in ("conv_agent_activity", "conv_tenant_activity") if name in scan), None)
        print(
            f"  Index Scan with the row comparison as index condition: "
            f"{'yes, on ' + index if index and 'ROW(' in index_cond else 'NO'}"
        )
        if index == "conv_tenant_activity":
            print(
                "  (every conversation of this tenant has the agent, so agent_id selects nothing and the planner\n"
                "   takes the smaller tenant index; --sibling-conversations 3000 shows conv_agent_activity)"
            )
        page1 = deep_page_plan(tenant, agent, None)
        print(f"  page 1, for comparison: {page1[-1].strip()}")
    finally:
        stack.close()  # stops the server
        started = time.perf_counter()
        Conversation.objects.filter(tenant=tenant).delete()
        tenant.delete()
        print(f"Deleted tenant {tenant_id} and its rows in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
