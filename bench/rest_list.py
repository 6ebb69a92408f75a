"""Benchmark of the conversation list: the DRF endpoint against a bare Django view and a raw ASGI + psycopg
reference, and page 1 against a deep page.

    DATABASE_URL=postgres://... [REDIS_URL=redis://...] .venv/bin/python bench/rest_list.py
        [--rounds 6 --seconds 4 --concurrency 8] [--server daphne|uvicorn] [--no-db-pool]

Seeds a fresh tenant with one agent and 10,000 conversations (distinct `updated_at`) and starts two server
processes side by side: the project under `bench.settings` (which adds the bare view) with one `--server`
process (uvicorn by default), on psycopg's connection pool unless `--no-db-pool` (BENCH_DB_POOL=1; REDIS_URL,
when set, serves the throttle and the key cache as deployed); and bench/raw_list.py, a raw ASGI app without
Django on an async psycopg pool of the same size, with one uvicorn process (uvloop, httptools). It checks
that the raw app answers page 1 and a deep page with the list endpoint's JSON, then measures, in one run:

- throughput: median req/s of `GET .../agents/{aid}/conversations?limit=50` from `--concurrency` clients, in
  rounds that run each side for `--seconds` in turn (the order rotated from round to round), for the DRF
  endpoint, the bare view (the same query with `.values()` and `JsonResponse`, no auth) and the raw
  reference (the same query, no auth); with the CPU time per request of the serving process (and how
  busy it was) and of this process's clients (psutil, over the same windows): a server well under 100%
  busy was waiting for the clients, not the other way round. Goal: list >= 0.5x the raw reference;
  bare/raw shows how much of the gap is Django's own request cycle;
- latency: page 1 against the page 9,000 rows deep, reached by walking the cursor (goal: deep <= 1.5x).

It prints EXPLAIN ANALYZE of the deep-page query as the list endpoint runs it and the 1-minute load
average at the start and at the end, then deletes the tenant. The benchmark's clients run in this process on
the same machine, so figures depend on its load and cores: the sides are measured in turns for that reason.
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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

import httpx  # noqa: E402
import psutil  # noqa: E402
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
from tests.servers import Server, database_url_of_tests, serve  # noqa: E402

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


@dataclass
class Window:
    """One side's throughput window: requests answered, and the CPU time of the serving process and of this
    one (the clients) meanwhile."""

    requests: int
    seconds: float
    cpu_seconds: float
    client_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


CLIENT = psutil.Process()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def throughput(
    client: httpx.AsyncClient, url: str, *, seconds: float, concurrency: int, process: psutil.Process
) -> Window:
    """`concurrency` clients looping on `url` for `seconds`, against the server `process`."""
    done = 0
    cpu_before, client_cpu_before = cpu_seconds(process), cpu_seconds(CLIENT)
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
    elapsed = time.perf_counter() - start
    return Window(
        requests=done,
        seconds=elapsed,
        cpu_seconds=cpu_seconds(process) - cpu_before,
        client_cpu_seconds=cpu_seconds(CLIENT) - client_cpu_before,
    )


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


SIDES = {
    "list": "DRF list endpoint",
    "bare": "bare async view (.values())",
    "raw": "raw ASGI + psycopg",
}


async def measure(
    args: argparse.Namespace, server: Server, raw: Server, tenant: Tenant, agent: Agent, secret: str
) -> str:
    path = f"/tenants/{tenant.id}/api/v2/agents/{agent.id}/conversations"
    urls = {
        "list": f"{server.url}{path}?limit={LIMIT}",
        "bare": f"{server.url}/bench/tenants/{tenant.id}/agents/{agent.id}/conversations",
        "raw": f"{raw.url}{path}?limit={LIMIT}",
    }
    processes = {"list": psutil.Process(server.pid), "bare": psutil.Process(server.pid), "raw": psutil.Process(raw.pid)}
    headers = {"Authorization": f"Bearer {secret}"}  # the raw app and the bare view ignore it
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    # A client per server: a shared one would close idle connections to one server to open them to the other.
    async with (
        httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as project_client,
        httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as raw_client,
    ):
        clients = {"list": project_client, "bare": project_client, "raw": raw_client}
        listed = await project_client.get(urls["list"])
        bare = (await project_client.get(urls["bare"])).json()["items"]
        raw_page = await raw_client.get(urls["raw"])
        assert [c["id"] for c in listed.json()["items"]] == [c["id"] for c in bare], "list and bare view disagree"
        assert len(bare) == LIMIT
        assert listed.json() == raw_page.json(), "list and raw reference disagree on page 1"
        same_bytes = "byte for byte" if listed.content == raw_page.content else "as JSON (not byte for byte)"
        print(f"The raw reference answers page 1 as the list endpoint does, {same_bytes}.")

        # Warm every side (imports, URL resolver, connections, prepared statements) before anything is counted.
        for name, url in urls.items():
            await throughput(clients[name], url, seconds=1, concurrency=args.concurrency, process=processes[name])

        rounds: list[dict[str, Window]] = []
        names = list(SIDES)
        for round_ in range(args.rounds):
            order = names[round_ % 3 :] + names[: round_ % 3]  # each side runs first in one round of three
            windows = {
                name: await throughput(
                    clients[name],
                    urls[name],
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                    process=processes[name],
                )
                for name in order
            }
            rounds.append(windows)
            rates = {name: window.rate for name, window in windows.items()}
            print(
                f"  round {round_ + 1}: "
                + "   ".join(f"{name} {rates[name]:7.1f} req/s" for name in names)
                + f"   list/raw {rates['list'] / rates['raw']:.2f}",
                flush=True,
            )

        page_url = urls["list"].split("?")[0]
        cursor = await deep_cursor(project_client, page_url, args.depth)
        deep_page = (await project_client.get(page_url, params={"limit": LIMIT, "next": cursor})).json()
        first_deep = deep_page["items"][0]
        assert first_deep["name"] == f"Bench conversation {args.depth:05d}", first_deep["name"]
        raw_deep = (await raw_client.get(urls["raw"].split("?")[0], params={"limit": LIMIT, "next": cursor})).json()
        assert raw_deep == deep_page, "list and raw reference disagree on the deep page"

        page1_times, deep_times = [], []
        for _ in range(5):  # warm-up
            await timed_get(project_client, page_url, {"limit": LIMIT})
            await timed_get(project_client, page_url, {"limit": LIMIT, "next": cursor})
        for i in range(args.samples):
            pair = [(page1_times, {"limit": LIMIT}), (deep_times, {"limit": LIMIT, "next": cursor})]
            for times, params in pair if i % 2 == 0 else reversed(pair):
                times.append(await timed_get(project_client, page_url, params))

    rate = {name: statistics.median(r[name].rate for r in rounds) for name in names}
    round_ratio = {
        pair: statistics.median(r[pair[0]].rate / r[pair[1]].rate for r in rounds)
        for pair in (("list", "raw"), ("bare", "raw"), ("list", "bare"))
    }
    totals = {
        name: Window(
            requests=sum(r[name].requests for r in rounds),
            seconds=sum(r[name].seconds for r in rounds),
            cpu_seconds=sum(r[name].cpu_seconds for r in rounds),
            client_cpu_seconds=sum(r[name].client_cpu_seconds for r in rounds),
        )
        for name in names
    }
    page1_ms = statistics.median(page1_times) * 1000
    deep_ms = statistics.median(deep_times) * 1000
    latency_ratio = deep_ms / page1_ms

    print()
    print(
        f"Throughput, limit={LIMIT}, {args.concurrency} concurrent clients, {args.rounds} rounds x {args.seconds:g} s "
        "per side, order rotated (median of rounds); CPU time over the same windows (busy: of one core)"
    )
    print(f"  {'':<30}{'req/s':>9}{'x raw':>8}{'server CPU/request':>21}{'(busy)':>8}{'client CPU/request':>21}")
    for name, label in SIDES.items():
        total = totals[name]
        print(
            f"  {label:<30}{rate[name]:9.1f}{rate[name] / rate['raw']:8.2f}"
            f"{1000 * total.cpu_seconds / total.requests:18.2f} ms{total.cpu_seconds / total.seconds:8.0%}"
            f"{1000 * total.client_cpu_seconds / total.requests:18.2f} ms"
        )
    list_raw = rate["list"] / rate["raw"]
    print(
        f"  ratio list/raw {list_raw:.2f} (median of the rounds' own ratios {round_ratio['list', 'raw']:.2f})   "
        f"goal >= 0.50: {verdict(list_raw >= 0.5)}"
    )
    print(
        f"  ratio bare/raw {rate['bare'] / rate['raw']:.2f} (rounds' {round_ratio['bare', 'raw']:.2f}), "
        f"list/bare {rate['list'] / rate['bare']:.2f} (rounds' {round_ratio['list', 'bare']:.2f})"
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
        "--db-pool",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the project with psycopg's connection pool (BENCH_DB_POOL=1), as by default",
    )
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="uvicorn", help="the project's ASGI server")
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]
    db = connection.settings_dict
    print(
        f"Database {db['NAME']} on {db['HOST'] or 'local socket'}:{db['PORT']}; "
        f"{os.cpu_count()} CPUs, load average {load_at_start:.2f}"
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
        redis = os.environ.get("REDIS_URL") or "unset (throttle and key cache in process memory)"
        print(
            f"{args.server} (one process, pid {server.pid}) on 127.0.0.1:{server.port}, "
            f"DJANGO_SETTINGS_MODULE=bench.settings, {connections}, REDIS_URL {redis}, log {server.log_path}"
        )
        raw = stack.enter_context(
            serve(
                "uvicorn",
                env={"DATABASE_URL": database_url_of_tests()},
                args=("--lifespan", "on"),  # no database at start-up: fail rather than answer 500s
                log_path=workdir / "raw.log",
                application="bench.raw_list:app",
            )
        )
        print(f"raw reference bench.raw_list:app: uvicorn (one process, pid {raw.pid}) on 127.0.0.1:{raw.port}")
        print()
        cursor = asyncio.run(measure(args, server, raw, tenant, agent, secret))
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
        print()
        print(f"Load average (1 min): {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    finally:
        stack.close()  # stops the servers
        started = time.perf_counter()
        Conversation.objects.filter(tenant=tenant).delete()
        tenant.delete()
        print(f"Deleted tenant {tenant_id} and its rows in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
