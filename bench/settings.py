"""Settings for the benchmarks: the project's own settings plus the benchmark-only routes."""

import os

from config.settings import *  # noqa: F403
from config.settings import DATABASES

ROOT_URLCONF = "bench.urls"
# The benchmark sends thousands of requests a minute with one key; the throttle still runs, it just never trips.
THROTTLE_RATE = "100000000/min"

if os.environ.get("BENCH_DB_POOL"):
    # `rest_list.py --db-pool`: psycopg's connection pool (needs the psycopg-pool package) instead of a new
    # connection per request, to see the per-request cost without connection set-up.
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "pool": {"min_size": 4, "max_size": 16},
    }
