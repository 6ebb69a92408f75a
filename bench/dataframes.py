"""Benchmark of data-frame reads: the endpoint (served by uvicorn, or `--server daphne`) against naive pandas
on the same file.

    DATABASE_URL=postgres://... .venv/bin/python bench/dataframes.py [--rounds 7] [--server daphne|uvicorn]

Creates a fresh tenant with one 1,000,000-row x 20-column frame (Parquet, row groups of 64k, zstd) in a
temporary MEDIA_ROOT, starts the server on a free port, and measures in one run, alternating:

  (a) `?offset=500000&limit=100&column_names=<3 columns>`
  (b) `?order_by=-<numeric column>&limit=100`

each against `pandas.read_parquet(whole file)` followed by the same slice or sort, each run in a fresh
process. Time: median wall time per request (the endpoint's includes HTTP, auth and the database).
Peak RSS: the most memory the serving process (or the naive process) added while answering, measured
by resetting the kernel's high-water mark (/proc/<pid>/clear_refs) before each request (the server uses
the system allocator so that memory freed after one request is not hidden in a pool during the next).
Goals: (a) <= 0.1x naive time, <= 0.2x its peak RSS, <= 100 ms; (b) <= 0.5x naive time.
Deletes the tenant and the files at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if not os.environ.get("DATABASE_URL"):
    sys.exit("Set DATABASE_URL (the benchmark creates and deletes its own tenant).")
MEDIA = tempfile.mkdtemp(prefix="parley-bench-dataframes-")
os.environ["MEDIA_ROOT"] = MEDIA
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"

import django  # noqa: E402

django.setup()

import logging  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from django.core.files.storage import default_storage  # noqa: E402
from django.core.management import call_command  # noqa: E402

from agents.models import Agent  # noqa: E402
from conversations.models import Conversation  # noqa: E402
from dataframes.services import dataframe_create  # noqa: E402
from tenants.services import api_key_create, tenant_create  # noqa: E402
from tests.servers import serve  # noqa: E402

logging.getLogger("httpx").setLevel(logging.WARNING)
ROWS, SLICE_COLUMNS, SORT_COLUMN = 1_000_000, ["f03", "i02", "s01"], "f07"

# The naive side, in a fresh process per run (so that its peak is its own): read the whole file, then slice.
NAIVE = r"""
import json, sys, time
import pandas as pd

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

job = json.loads(sys.argv[1])
before = status("VmRSS:")
started = time.perf_counter()
df = pd.read_parquet(job["path"])
if job["case"] == "a":
    rows = df.iloc[500_000:500_100][job["columns"]].to_dict(orient="records")
else:
    rows = df.sort_values(job["column"], ascending=False, kind="stable").head(100).to_dict(orient="records")
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "peak": status("VmHWM:") - before, "rows": len(rows)}))
"""


def vm(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(key)


def build_table() -> pa.Table:
    rng = np.random.default_rng(42)
    columns = {}
    for i in range(12):
        columns[f"f{i:02d}"] = rng.normal(size=ROWS)
    for i in range(6):
        columns[f"i{i:02d}"] = rng.integers(0, 1_000_000, ROWS)
    words = np.array([f"item-{n:04d}" for n in range(5000)], dtype=object)
    for i in range(2):
        columns[f"s{i:02d}"] = pa.array(words[rng.integers(0, len(words), ROWS)], pa.string())
    return pa.table(columns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="uvicorn", help="the ASGI server")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    tenant = tenant_create(tenant_id=f"bench-df-{secrets.token_hex(4)}", name="dataframes benchmark")
    _, secret = api_key_create(tenant=tenant, name="bench")
    agent = Agent.objects.create(tenant=tenant, name="Bench agent")
    conversation = Conversation.objects.create(tenant=tenant, agent=agent, name="bench")
    stack = ExitStack()
    try:
        started = time.perf_counter()
        frame = dataframe_create(tenant_id=tenant.id, conversation_id=conversation.id, name="big", table=build_table())
        path = default_storage.path(frame.storage_key)
        print(
            f"frame: {frame.row_count:,} rows x {len(frame.schema)} columns, {os.path.getsize(path) / 2**20:.1f} MiB "
            f"Parquet, written in {time.perf_counter() - started:.1f} s"
        )

        # Memory the server frees after a request must go back to the system, or the next request's added
        # peak would read as ~0: Arrow's system allocator and a fixed glibc mmap threshold. This makes the
        # endpoint a little slower; the naive side keeps the default allocator and a fresh process per run.
        env = {"LOG_LEVEL": "WARNING", "ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_MMAP_THRESHOLD_": "131072"}
        running = stack.enter_context(serve(args.server, env=env))
        server = running.process
        print(f"{args.server} (one process, pid {server.pid}) on 127.0.0.1:{running.port}")
        client = httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {secret}"}, timeout=60)
        url = f"/tenants/{tenant.id}/api/v2/agents/{agent.id}/conversations/{conversation.id}/data-frames/big"
        cases = {
            "a": (f"{url}?offset=500000&limit=100&column_names={','.join(SLICE_COLUMNS)}", {"columns": SLICE_COLUMNS}),
            "b": (f"{url}?order_by=-{SORT_COLUMN}&limit=100", {"column": SORT_COLUMN}),
        }

        def endpoint(case: str) -> tuple[float, int]:
            with open(f"/proc/{server.pid}/clear_refs", "w") as refs:
                refs.write("5")
            before = vm(server.pid, "VmRSS:")
            started = time.perf_counter()
            response = client.get(cases[case][0])
            elapsed = time.perf_counter() - started
            assert response.status_code == 200 and len(response.json()["rows"]) == 100, response.text[:300]
            return elapsed, vm(server.pid, "VmHWM:") - before

        def naive(case: str) -> tuple[float, int]:
            job = json.dumps({"case": case, "path": path, **cases[case][1]})
            result = json.loads(
                subprocess.run([sys.executable, "-c", NAIVE, job], capture_output=True, check=True).stdout
            )
            assert result["rows"] == 100
            return result["seconds"], result["peak"]

        # The answers must agree before their costs are compared.
        expected = client.get(cases["b"][0]).json()["rows"][0][SORT_COLUMN]
        assert expected == pc.max(pq.read_table(path, columns=[SORT_COLUMN]).column(0)).as_py()

        for case in cases:  # warm-up: imports, the first connection, page cache
            endpoint(case)
            naive(case)
        figures = {(case, side): [] for case in cases for side in ("endpoint", "naive")}
        for _ in range(args.rounds):
            for case in cases:
                figures[(case, "endpoint")].append(endpoint(case))
                figures[(case, "naive")].append(naive(case))

        floor = []
        for _ in range(args.rounds):  # the same auth and database path, no Parquet: the cost of any request
            started = time.perf_counter()
            client.get(url.rsplit("/", 1)[0] + "?limit=1").raise_for_status()
            floor.append(time.perf_counter() - started)
        print(
            f"\nrequest floor (GET .../data-frames?limit=1, no Parquet read): {statistics.median(floor) * 1000:.1f} ms"
        )
        print(f"{args.rounds} rounds, alternating; medians (peak RSS = memory added while answering)")
        print(f"{'case':<44} {'endpoint':>10} {'naive':>10} {'ratio':>7}   {'RSS ep':>8} {'RSS naive':>9} {'ratio':>6}")
        goals = {"a": (0.1, 0.2, 0.100), "b": (0.5, None, None)}
        ok = True
        for case, label in (
            ("a", "(a) offset=500000 limit=100, 3 columns"),
            ("b", f"(b) order_by=-{SORT_COLUMN} limit=100"),
        ):
            ep_time = statistics.median(t for t, _ in figures[(case, "endpoint")])
            nv_time = statistics.median(t for t, _ in figures[(case, "naive")])
            ep_rss = statistics.median(r for _, r in figures[(case, "endpoint")])
            nv_rss = statistics.median(r for _, r in figures[(case, "naive")])
            time_ratio, rss_ratio = ep_time / nv_time, ep_rss / nv_rss
            print(
                f"{label:<44} {ep_time * 1000:>8.1f}ms {nv_time * 1000:>8.1f}ms {time_ratio:>6.3f}x"
                f"   {ep_rss / 2**20:>6.1f}MB {nv_rss / 2**20:>7.1f}MB {rss_ratio:>5.3f}x"
            )
            max_time_ratio, max_rss_ratio, max_seconds = goals[case]
            verdicts = [f"time <= {max_time_ratio}x naive: {'yes' if time_ratio <= max_time_ratio else 'NO'}"]
            ok &= time_ratio <= max_time_ratio
            if max_rss_ratio is not None:
                verdicts.append(f"RSS <= {max_rss_ratio}x: {'yes' if rss_ratio <= max_rss_ratio else 'NO'}")
                ok &= rss_ratio <= max_rss_ratio
            if max_seconds is not None:
                verdicts.append(f"median <= {max_seconds * 1000:.0f} ms: {'yes' if ep_time <= max_seconds else 'NO'}")
                ok &= ep_time <= max_seconds
            print(f"    goals: {'; '.join(verdicts)}")
        print("\nall goals met" if ok else "\nSOME GOALS MISSED")
    finally:
        stack.close()  # stops the server
        tenant.delete()
        shutil.rmtree(MEDIA, ignore_errors=True)


if __name__ == "__main__":
    main()
