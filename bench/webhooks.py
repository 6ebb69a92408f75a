"""Benchmark of webhook deliveries: how long an event takes from its commit to its receiver, and how fast a
backlog drains, with the sender as every server process runs it.

    DATABASE_URL=postgres://... [REDIS_URL=redis://...] .venv/bin/python bench/webhooks.py
        [--rate 200 --seconds 20 --endpoints 1,4 --recorders 8 --backlog 10000 --phases latency,backlog]

Everything runs in this one process (config.settings, TOOL_ALLOWED_NETWORKS=127.0.0.1/32 unless set, so
that the local receiver is allowed): a receiver, an HTTP/1.1 server on asyncio in a thread of its own that
answers every POST 200 at once and keeps its arrival time (time.time()) and the body's event id and
"timestamp"; the sender,
`turns.webhooks.webhooks_send_forever()` on the main thread's event loop in the owner's scope, as
turns.maintenance starts it; and the recorders, worker threads that record events as the app does:
`webhook_event_record(...)` in a transaction of its own each, in the tenant's scope, whose commit wakes the
sender. Each run has a fresh tenant with its endpoints, deleted at its end (then the webhook tables are
vacuumed: this machine's PostgreSQL has autovacuum off).

1. Latency, once per `--endpoints` count (1 then 4 by default: every event is one delivery per endpoint):
   `--rate` events/s for `--seconds` s, paced by one thread and recorded by `--recorders` threads; then it
   waits for every delivery (120 s at most). It reports the deliveries received against recorded (distinct
   endpoint and event id; duplicates apart), the latency (arrival minus the body's "timestamp", the event's
   time, in ms resolution: so it includes the event's commit) p50/p95/p99/max, the sender's own view from the
   database (delivered_at - created_at, and the attempt's duration_ms), the attempts that failed, the
   receiver's TCP connections, how often the sender polled for due endpoints and fetched a batch, how late
   this process's event loop ran (p99 and max lateness of a 5 ms sleeper), this process's CPU time per
   delivery, and the 1-minute load average before and after. Goal: p99 <= 2 s.
2. Backlog: `--backlog` deliveries pending for one endpoint, recorded while no sender runs (by
   `webhook_events_record`, 1,000 events per transaction, while nothing listens at the endpoint's port),
   then the receiver (on that port) and the sender start: the drain
   time and rate, and this process's memory: its peak RSS (resource.getrusage) since its start, read
   before the drain; then the kernel's high-water mark is reset (/proc/self/clear_refs, which getrusage
   reads too) so that the peak read after the drain is the drain's own; and VmRSS before, sampled every
   50 ms during, and after. Goal: memory bounded (the drain's peak at most 50 MiB over the RSS before it).

To count the sender's polls and batches it wraps `turns.webhooks.webhook_endpoints_due` and
`webhook_deliveries_next` in this process (a counter around the same call); nothing else is changed.
httpx2's INFO line per request is silenced (as bench/rest_list.py does httpx's). The recorders, the receiver
and the sender share this process's GIL, as a server process's requests and its sender do: the CPU time per
delivery says how close that is to one core. The machine's other work shares its CPUs: the load average is
printed for that reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if not os.environ.get("DATABASE_URL"):
    sys.exit("Set DATABASE_URL (the benchmark creates and deletes its own tenants).")
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
os.environ.setdefault("TOOL_ALLOWED_NETWORKS", "127.0.0.1/32")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

import turns.webhooks as sender  # noqa: E402
from bench.compare import load_text  # noqa: E402
from core.tenancy import scoped_context, tenant_scope  # noqa: E402
from tenants.models import Tenant, WebhookDelivery, WebhookEndpoint  # noqa: E402
from tenants.services import tenant_create  # noqa: E402
from tenants.webhooks import webhook_endpoint_create, webhook_event_record, webhook_events_record  # noqa: E402

EVENT = "message.completed"
LATENCY_GOAL_P99 = 2.0  # seconds
WAIT_FOR_ALL = 120.0  # seconds after the last event, at most, for every delivery to arrive
BACKLOG_BATCH = 1000  # events per transaction when the backlog is recorded
logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per delivery otherwise
CONTENT = "The quarterly report is attached; the figures for March are in the second table. " * 5


# --- The receiver ---------------------------------------------------------------------------------------


class Receiver:
    """An HTTP/1.1 server (keep-alive, Content-Length bodies) on an asyncio loop in a thread of its own: 200
    to every request at once; keeps (arrival time, path, event id, event timestamp) of each (not the body:
    10,000 bodies would be some 10 MiB of this process's memory) and counts its connections."""

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self.received: list[tuple[float, bytes, str, str]] = []
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, number: int) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{number}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._error: OSError | None = None
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self._port, backlog=1024)
            )
        except OSError as exc:
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run_forever()
        self._server.close()
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                length, close = 0, False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection":
                        close = value.strip().lower() == b"close"
                body = await reader.readexactly(length)
                arrived = time.time()
                payload = json.loads(body)
                self.received.append((arrived, path, payload["id"], payload["timestamp"]))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# --- Counting the sender's calls (the same functions, wrapped in this process) ----------------------------


@dataclass
class Counted:
    name: str
    function: Callable
    calls: int = 0
    empty: int = 0  # calls that returned nothing
    seconds: float = 0.0  # their wall time (in the worker thread)

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            result = self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1
        if not result:
            self.empty += 1
        return result

    def reset(self) -> None:
        self.calls, self.empty, self.seconds = 0, 0, 0.0


POLLS = Counted("webhook_endpoints_due", sender.webhook_endpoints_due)
BATCHES = Counted("webhook_deliveries_next", sender.webhook_deliveries_next)
sender.webhook_endpoints_due = POLLS
sender.webhook_deliveries_next = BATCHES


# --- Helpers ---------------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (KiB on Linux)


def status_mib(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def tenant_with_endpoints(label: str, urls: list[str]) -> tuple[Tenant, list[WebhookEndpoint]]:
    tenant = tenant_create(tenant_id=f"bench-{secrets.token_hex(4)}", name=f"webhooks benchmark: {label}")
    endpoints = [webhook_endpoint_create(tenant=tenant, url=url, events=[EVENT])[0] for url in urls]
    return tenant, endpoints


def delete_tenant(tenant: Tenant) -> None:
    """Delete the tenant and what it wrote, then vacuum the tables (autovacuum is off on this machine). The
    tenant has nothing but its endpoints and deliveries: its row goes without Django's cascade, which would
    query every tenant-owned table (one a newer model has and this database lacks would stop it)."""
    WebhookDelivery.objects.filter(tenant=tenant).delete()
    WebhookEndpoint.objects.filter(tenant=tenant).delete()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(Tenant._meta.db_table)} WHERE id = %s", [tenant.id])
    with connection.cursor() as cursor:  # autocommit: VACUUM cannot run in a transaction
        for model in (WebhookDelivery, WebhookEndpoint, Tenant):
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(model._meta.db_table)}")


def event_data(number: int) -> dict:
    """A `message.completed` event's data, about the size of a short reply's."""
    return {
        "message": {
            "id": f"msg_bench{number:08d}",
            "role": "assistant",
            "status": "completed",
            "content": CONTENT,
            "conversation_id": "cnv_bench",
            "metadata": {},
        },
        "agent_id": "agt_bench",
    }


def record_one(tenant_id: str, number: int) -> int:
    """One event, as the app records it: in its own transaction, in the tenant's scope."""
    with tenant_scope(tenant_id), transaction.atomic():
        return webhook_event_record(tenant_id=tenant_id, event_type=EVENT, data=lambda: event_data(number))


def record_paced(tenant_id: str, *, rate: float, seconds: float, recorders: ThreadPoolExecutor) -> tuple[int, float]:
    """`rate` events a second for `seconds`, each handed to a recorder thread on time; (deliveries recorded,
    the seconds it took until the last was committed)."""
    started = time.monotonic()
    futures = []
    for number in range(int(rate * seconds)):
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        futures.append(recorders.submit(record_one, tenant_id, number))
    recorded = sum(future.result() for future in futures)
    return recorded, time.monotonic() - started


def close_connections(recorders: ThreadPoolExecutor, threads: int) -> None:
    """Close each recorder thread's database connection (one task per thread, held at a barrier)."""
    barrier = threading.Barrier(threads)

    def close() -> None:
        barrier.wait(10)
        connection.close()

    for future in [recorders.submit(close) for _ in range(threads)]:
        future.result()


@dataclass
class LoopLag:
    """How late a 5 ms sleeper on the event loop wakes up: the loop's own delay (GIL, callbacks)."""

    interval: float = 0.005
    late: list[float] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.late.append(time.perf_counter() - started - self.interval)


class SenderRunning:
    """webhooks_send_forever() on this loop, in the owner's scope as turns.maintenance starts it, with the
    loop-lag sampler beside it; on exit it is cancelled, after the endpoint tasks it started have ended."""

    def __init__(self) -> None:
        self.lag = LoopLag()

    async def __aenter__(self) -> SenderRunning:
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(sender.webhooks_send_forever(), name="webhooks", context=scoped_context(None))
        self.lag_task = loop.create_task(self.lag.run())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        self.lag_task.cancel()
        for task in (self.task, self.lag_task):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        endpoint_tasks = list(sender._sending.values())
        if endpoint_tasks:  # (nothing left to send: they end after one more empty batch)
            await asyncio.wait(endpoint_tasks, timeout=30)


def distinct(received: list[tuple[float, bytes, str, str]]) -> tuple[dict[tuple[bytes, str], float], int]:
    """{(path, event id): latency in seconds} of the first arrival of each, and the number of duplicates."""
    latencies: dict[tuple[bytes, str], float] = {}
    duplicates = 0
    for arrived, path, event_id, timestamp in received:
        if (path, event_id) in latencies:
            duplicates += 1
            continue
        latencies[(path, event_id)] = arrived - datetime.fromisoformat(timestamp).timestamp()
    return latencies, duplicates


def sender_view(tenant: Tenant) -> dict:
    """From the database: deliveries by status, delivered_at - created_at and attempt durations (seconds),
    and the attempts that did not deliver."""
    rows = list(
        WebhookDelivery.objects.filter(tenant=tenant).values_list("status", "created_at", "delivered_at", "attempt_log")
    )
    statuses: dict[str, int] = {}
    for status, *_ in rows:
        statuses[status] = statuses.get(status, 0) + 1
    delays = [(delivered - created).total_seconds() for status, created, delivered, _ in rows if delivered]
    attempts = [entry for *_, log in rows for entry in log]
    durations = [entry["duration_ms"] / 1000 for entry in attempts]
    failed = [entry for entry in attempts if not (entry["status_code"] and 200 <= entry["status_code"] < 300)]
    errors: dict[str, int] = {}
    for entry in failed:
        reason = entry["error"] or str(entry["status_code"])
        errors[reason] = errors.get(reason, 0) + 1
    return {"statuses": statuses, "delays": delays, "durations": durations, "failed": len(failed), "errors": errors}


def print_distribution(label: str, values: list[float]) -> None:
    if not values:
        print(f"  {label}: none")
        return
    print(
        f"  {label}: p50 {ms(percentile(values, 0.5))}, p95 {ms(percentile(values, 0.95))}, "
        f"p99 {ms(percentile(values, 0.99))}, max {ms(max(values))} (n={len(values):,})"
    )


# --- 1. Latency ------------------------------------------------------------------------------------------


async def latency_run(*, endpoints: int, rate: float, seconds: float, recorders: ThreadPoolExecutor) -> dict:
    loop = asyncio.get_running_loop()
    receiver = Receiver()
    tenant, _ = await asyncio.to_thread(
        tenant_with_endpoints, f"latency x{endpoints}", [receiver.url(n) for n in range(endpoints)]
    )
    print(f"\n--- latency: {rate:g} events/s for {seconds:g} s, {endpoints} endpoint(s), tenant {tenant.id} ---")
    POLLS.reset()
    BATCHES.reset()
    try:
        load_before, cpu_before = load_text(), cpu_now()
        async with SenderRunning() as running:
            pacer = ThreadPoolExecutor(1, thread_name_prefix="pacer")
            recorded, recording_seconds = await loop.run_in_executor(
                pacer, lambda: record_paced(tenant.id, rate=rate, seconds=seconds, recorders=recorders)
            )
            pacer.shutdown()
            deadline = time.monotonic() + WAIT_FOR_ALL
            while time.monotonic() < deadline:
                if len(receiver.received) >= recorded and len(distinct(receiver.received)[0]) >= recorded:
                    break
                await asyncio.sleep(0.1)
            drained_after = time.monotonic() - deadline + WAIT_FOR_ALL
        cpu = cpu_now() - cpu_before
        load_after = load_text()
        latencies, duplicates = distinct(receiver.received)
        view = await asyncio.to_thread(sender_view, tenant)
        values = list(latencies.values())
        result = {
            "endpoints": endpoints,
            "recorded": recorded,
            "received": len(values),
            "p50": percentile(values, 0.5),
            "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99),
            "max": max(values, default=float("nan")),
        }
        print(f"  load average before {load_before}, after {load_after}")
        print(
            f"  recorded {recorded:,} deliveries ({int(rate * seconds):,} events) in {recording_seconds:.1f} s "
            f"({int(rate * seconds) / recording_seconds:.0f} events/s); received {len(values):,} distinct "
            f"(+{duplicates} duplicates) over {receiver.connections:,} TCP connections; all in "
            f"{drained_after:.1f} s after the last event was recorded"
        )
        print_distribution("latency, arrival - event timestamp", values)
        print_distribution("sender's view, delivered_at - created_at", view["delays"])
        print_distribution("attempt duration (attempt_log duration_ms)", view["durations"])
        print(f"  deliveries by status {view['statuses']}; attempts that failed {view['failed']} {view['errors']}")
        print(
            f"  sender: {POLLS.calls:,} polls for due endpoints ({POLLS.empty:,} found none; "
            f"{POLLS.seconds / max(POLLS.calls, 1) * 1000:.1f} ms each), {BATCHES.calls:,} batches fetched "
            f"({BATCHES.empty:,} empty; {BATCHES.seconds / max(BATCHES.calls, 1) * 1000:.1f} ms each)"
        )
        print(
            f"  event loop lateness p99 {ms(percentile(running.lag.late, 0.99))}, max {ms(max(running.lag.late))}; "
            f"this process's CPU {cpu:.1f} s ({cpu / max(len(values), 1) * 1000:.2f} ms per delivery, recording "
            "and receiving included)"
        )
        met = result["p99"] <= LATENCY_GOAL_P99 and len(values) == recorded
        print(f"  goal p99 <= {LATENCY_GOAL_P99:g} s: {verdict(met)}")
        return result
    finally:
        receiver.close()
        await asyncio.to_thread(delete_tenant, tenant)


# --- 2. Backlog ------------------------------------------------------------------------------------------


def record_backlog(tenant_id: str, count: int) -> int:
    recorded = 0
    for start in range(0, count, BACKLOG_BATCH):
        numbers = range(start, min(count, start + BACKLOG_BATCH))
        with tenant_scope(tenant_id), transaction.atomic():
            recorded += webhook_events_record(
                tenant_id=tenant_id, event_type=EVENT, data=lambda numbers=numbers: [event_data(n) for n in numbers]
            )
    return recorded


async def backlog_run(*, count: int) -> dict:
    # The endpoint's port is taken and released: nothing listens there while the backlog is recorded.
    probe = Receiver()
    url, port = probe.url(0), probe.port
    probe.close()
    tenant, _ = await asyncio.to_thread(tenant_with_endpoints, "backlog", [url])
    print(f"\n--- backlog: {count:,} deliveries pending for one endpoint, tenant {tenant.id} ---")
    receiver = None
    try:
        started = time.monotonic()
        recorded = await asyncio.to_thread(record_backlog, tenant.id, count)
        print(f"  recorded {recorded:,} deliveries in {time.monotonic() - started:.1f} s (no sender running)")
        gc.collect()
        peak_before, rss_before = peak_rss_mib(), status_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the drain's own high-water mark
        receiver_port_reused = True
        try:
            receiver = Receiver(port)
        except OSError:  # (the port was taken meanwhile: the endpoint is moved to a fresh one)
            receiver_port_reused = False
            receiver = Receiver()
            await asyncio.to_thread(lambda: WebhookEndpoint.objects.filter(tenant=tenant).update(url=receiver.url(0)))
        load_before, cpu_before = load_text(), cpu_now()
        rss_samples: list[float] = []
        POLLS.reset()
        BATCHES.reset()

        async def sample_rss() -> None:
            while True:
                rss_samples.append(status_mib("VmRSS"))
                await asyncio.sleep(0.05)

        drain_started = time.monotonic()
        async with SenderRunning() as running:
            sampler = asyncio.get_running_loop().create_task(sample_rss())
            first_at = None
            deadline = drain_started + 300
            while time.monotonic() < deadline and len(receiver.received) < recorded:
                if first_at is None and receiver.received:
                    first_at = time.monotonic()
                await asyncio.sleep(0.05)
            drain_seconds = time.monotonic() - drain_started
            sampler.cancel()
        cpu = cpu_now() - cpu_before
        latencies, duplicates = distinct(receiver.received)
        view = await asyncio.to_thread(sender_view, tenant)
        result = {
            "received": len(latencies),
            "recorded": recorded,
            "seconds": drain_seconds,
            "rate": len(latencies) / drain_seconds,
            "peak_before": peak_before,
            "peak_after": peak_rss_mib(),
            "hwm_drain": status_mib("VmHWM"),
            "rss_before": rss_before,
            "rss_max_sampled": max(rss_samples, default=float("nan")),
            "rss_after": status_mib("VmRSS"),
        }
        print(f"  load average before {load_before}, after {load_text()}")
        print(
            f"  drained {len(latencies):,}/{recorded:,} (+{duplicates} duplicates, over {receiver.connections:,} "
            f"TCP connections) in {drain_seconds:.1f} s: {result['rate']:.0f} deliveries/s "
            f"(first after {((first_at or drain_started) - drain_started) * 1000:.0f} ms)"
            + ("" if receiver_port_reused else " [endpoint moved to a new port]")
        )
        print_distribution("attempt duration (attempt_log duration_ms)", view["durations"])
        print(f"  deliveries by status {view['statuses']}; attempts that failed {view['failed']} {view['errors']}")
        print(
            f"  sender: {POLLS.calls:,} polls for due endpoints, {BATCHES.calls:,} batches fetched "
            f"({BATCHES.seconds / max(BATCHES.calls, 1) * 1000:.1f} ms each); event loop lateness p99 "
            f"{ms(percentile(running.lag.late, 0.99))}; this process's CPU {cpu:.1f} s "
            f"({cpu / max(len(latencies), 1) * 1000:.2f} ms per delivery, receiving included)"
        )
        print(
            f"  memory: peak RSS (getrusage) {result['peak_before']:.0f} MiB since the start, read before; "
            f"{result['peak_after']:.0f} MiB during the drain (VmHWM {result['hwm_drain']:.0f} MiB, reset before "
            f"it); RSS {result['rss_before']:.0f} MiB before, {result['rss_max_sampled']:.0f} MiB at most while "
            f"draining (sampled), {result['rss_after']:.0f} MiB after"
        )
        grown = result["peak_after"] - result["rss_before"]
        print(f"  goal memory bounded (drain adds < 50 MiB): {verdict(grown < 50)} (+{grown:.0f} MiB)")
        return result
    finally:
        if receiver is not None:
            receiver.close()
        await asyncio.to_thread(delete_tenant, tenant)


# --- Main ------------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> None:
    phases = args.phases.split(",")
    recorders = ThreadPoolExecutor(args.recorders, thread_name_prefix="recorder")
    results = []
    try:
        if "latency" in phases:
            for endpoints in (int(n) for n in args.endpoints.split(",")):
                results.append(
                    await latency_run(endpoints=endpoints, rate=args.rate, seconds=args.seconds, recorders=recorders)
                )
        backlog = await backlog_run(count=args.backlog) if "backlog" in phases else None
    finally:
        await asyncio.to_thread(close_connections, recorders, args.recorders)
        recorders.shutdown()
    print("\n=== summary ===")
    for r in results:
        print(
            f"latency, {r['endpoints']} endpoint(s): received {r['received']:,}/{r['recorded']:,}; p50 {ms(r['p50'])}, "
            f"p95 {ms(r['p95'])}, p99 {ms(r['p99'])}, max {ms(r['max'])}; goal p99 <= {LATENCY_GOAL_P99:g} s "
            f"{verdict(r['p99'] <= LATENCY_GOAL_P99 and r['received'] == r['recorded'])}"
        )
    if backlog:
        print(
            f"backlog: {backlog['received']:,}/{backlog['recorded']:,} in {backlog['seconds']:.1f} s "
            f"({backlog['rate']:.0f}/s); peak RSS {backlog['peak_before']:.0f} MiB before (since the start), "
            f"{backlog['peak_after']:.0f} MiB during the drain, from an RSS of {backlog['rss_before']:.0f} MiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200, help="events per second in the latency runs")
    parser.add_argument("--seconds", type=float, default=20, help="how long the latency runs record events")
    parser.add_argument("--endpoints", default="1,4", help="endpoints per latency run (one run for each)")
    parser.add_argument("--recorders", type=int, default=8, help="threads recording events")
    parser.add_argument("--backlog", type=int, default=10_000, help="deliveries pending in the backlog run")
    parser.add_argument("--phases", default="latency,backlog", help="latency, backlog, or both")
    args = parser.parse_args()
    print(
        f"webhooks benchmark: {os.cpu_count()} CPUs; load average {load_text()}; WEBHOOK_MAX_IN_FLIGHT "
        f"{settings.WEBHOOK_MAX_IN_FLIGHT}, WEBHOOK_POLL_SECONDS {settings.WEBHOOK_POLL_SECONDS:g}"
    )
    started = time.monotonic()
    asyncio.run(main_async(args))
    print(f"(total {time.monotonic() - started:.0f} s; load average at the end {load_text()})")


if __name__ == "__main__":
    main()
