"""Settings for the benchmarks: the project's own settings plus the benchmark-only routes."""

import os

from config.settings import *  # noqa: F403
from config.settings import DATABASES, REQUEST_SYNC_THREADS

ROOT_URLCONF = "bench.urls"
# The benchmark sends thousands of requests a minute with one key; the throttle still runs, it just never trips.
THROTTLE_RATE = "100000000/min"

if os.environ.get("BENCH_DB_POOL"):
    # `--db-pool`: psycopg's connection pool instead of a new connection per request, sized as README
    # recommends (REQUEST_SYNC_THREADS + the generation workers).
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "pool": {"min_size": 4, "max_size": REQUEST_SYNC_THREADS + 16},
    }
