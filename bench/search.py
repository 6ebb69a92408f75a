"""Benchmark of conversation search: latency of tenant-scoped searches over a million messages.

    DATABASE_URL=postgres://... .venv/bin/python bench/search.py [--reseed] [--samples 40]

Seeds (once; `--reseed` starts over) two tenants, `bench-search-a` and `bench-search-b`, each with three
agents, 25,000 conversations and 500,000 messages (1,000,000 in all). Text is drawn from a Zipf-like
vocabulary (frequency of the r-th word ~ 1/r): a few words are in a large share of the messages, most are
rare. About 40% of tokens are English stop words, a few are two-word collocations ("pull request"), user
messages are short and assistant messages long. Titles are 2 to 6 words of the same vocabulary.

It then measures `GET /tenants/{t}/api/v2/conversations/search?q=...&limit=20`, in process through Django's
test client: middleware, API key authentication, throttle, the DRF view, `conversation_search`, the
serializer and JSON rendering; no HTTP server, and one persistent database connection (DB_CONN_MAX_AGE),
so that connection set-up is not counted. Each query class (common words, rare words, a phrase, an
exclusion) runs over both tenants, with and without highlights in turns, and prints p50/p95 and the ratio.
Goals: p95 <= 50 ms; with highlights <= 2x without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
os.environ.setdefault("DB_CONN_MAX_AGE", "600")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from agents.models import Agent  # noqa: E402
from conversations import search  # noqa: E402
from conversations.models import Conversation, Message  # noqa: E402
from conversations.search import conversation_search  # noqa: E402
from tenants.models import ApiKey, Tenant  # noqa: E402
from tenants.services import api_key_create  # noqa: E402

TENANTS = ("bench-search-a", "bench-search-b")
AGENTS_PER_TENANT = 3
LIMIT = 20
SEED = 20240607

# Ordered by intended frequency: index 0 is the most frequent content word. Distinct English stems, no stop words.
HEAD_TEXT = """
data use time need file work model report user test issue code team question system project change error
value update check result version build server support process customer order account price request
table query feature list problem document source service review plan number page design config access
deploy release budget invoice meeting email payment schedule policy contract security network image
client database message option status task week month year market sales product cost revenue analysis
summary example detail step answer context prompt token agent search index cache memory disk cluster
region deadline manager engineer support ticket backlog sprint roadmap metric chart graph dashboard
pipeline script function class method variable param output input format parser schema column row field
record batch queue worker thread lock timeout retry failure crash warning alert monitor trace profile
benchmark latency throughput storage bucket upload download backup restore migration rollback branch
merge commit patch bug fix refactor lint style note draft letter proposal slide chapter article blog
travel hotel flight ticket visa passport holiday weekend dinner recipe garden house rent loan mortgage
salary tax insurance doctor health exercise coffee music movie book game sport weather river mountain
"""
HEAD_WORDS = list(dict.fromkeys(HEAD_TEXT.split()))  # "support" and "ticket" appear twice above
STOP_TEXT = """the of and to a in is it that for you this with on as are be at or was have not but
from by we can if your an will my so all they do there what which would about more when our their"""
STOP_WORDS = STOP_TEXT.split()
COLLOCATIONS = [
    "pull request",
    "unit test",
    "api key",
    "machine learning",
    "error message",
    "status code",
    "credit card",
    "time zone",
    "load balancer",
    "release notes",
    "quarterly report",
    "board meeting",
    "root cause",
    "access token",
    "data pipeline",
    "customer support",
    "sales forecast",
    "cash flow",
    "net revenue",
    "open source",
    "code review",
    "feature flag",
    "rate limit",
    "connection pool",
    "memory leak",
]
VOCABULARY_SIZE = 50_000  # content words, head words first, then generated ones
STOP_SHARE, COLLOCATION_SHARE, PERIOD_SHARE = 0.40, 0.01, 0.08

# Query classes: words are picked by frequency rank, so their share of messages follows from the vocabulary.
COMMON_RANKS = (7, 9, 11, 13)
RARE_RANKS = (20_000, 20_001, 20_002, 20_003)


# --- seeding --------------------------------------------------------------------------------------------


def vocabulary(rng: np.random.Generator) -> list[str]:
    """HEAD_WORDS then pronounceable generated words (consonant-vowel syllables, no English suffix to stem)."""
    consonants, vowels = list("bdfgklmnprstvz"), list("aiou")
    syllables = np.array([c + v for c in consonants for v in vowels])
    words = list(HEAD_WORDS)
    seen = set(words)
    while len(words) < VOCABULARY_SIZE:
        for parts in rng.integers(0, len(syllables), size=(VOCABULARY_SIZE, 3)):
            word = "".join(syllables[parts])
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == VOCABULARY_SIZE:
                    break
    return words


def zipf_sampler(rng: np.random.Generator, size: int, exponent: float = 1.0):
    cdf = np.cumsum(1.0 / np.arange(1, size + 1) ** exponent)
    cdf /= cdf[-1]
    return lambda n: np.minimum(np.searchsorted(cdf, rng.random(n)), size - 1)


class TextMaker:
    """Texts as word-id sequences joined with the vocabulary; vectorised, since it makes ~60M tokens."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        content = vocabulary(rng)
        # Token ids: [content words][stop words][collocations]; the same again with a full stop appended.
        words = content + STOP_WORDS + COLLOCATIONS
        self.words = np.array(words + [w + "." for w in words], dtype=object)
        self.n = len(words)
        self.content_words = content
        self.content = zipf_sampler(rng, len(content))
        self.stop = zipf_sampler(rng, len(STOP_WORDS), 0.8)
        self.collocation = zipf_sampler(rng, len(COLLOCATIONS), 0.8)

    def tokens(self, count: int) -> np.ndarray:
        kind = self.rng.random(count)
        ids = self.content(count)
        stop = kind < STOP_SHARE
        ids[stop] = VOCABULARY_SIZE + self.stop(int(stop.sum()))
        colloc = (kind >= STOP_SHARE) & (kind < STOP_SHARE + COLLOCATION_SHARE)
        ids[colloc] = VOCABULARY_SIZE + len(STOP_WORDS) + self.collocation(int(colloc.sum()))
        ids[self.rng.random(count) < PERIOD_SHARE] += self.n
        return ids

    def texts(self, lengths: np.ndarray) -> list[str]:
        ids = self.tokens(int(lengths.sum()))
        ends = np.cumsum(lengths)
        starts = ends - lengths
        words = self.words[ids]
        return [" ".join(words[s:e]) + "." for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


CROCKFORD = np.frombuffer(b"0123456789abcdefghjkmnpqrstvwxyz", dtype=np.uint8)


def ulids(prefix: str, millis: np.ndarray, rng: np.random.Generator) -> list[str]:
    """ULIDs (lowercase, as core.ids makes them) for these timestamps: 10 time digits, 16 random ones."""
    digits = np.empty((len(millis), 26), dtype=np.uint8)
    for i in range(10):
        digits[:, 9 - i] = (millis >> (5 * i)) & 31
    digits[:, 10:] = rng.integers(0, 32, size=(len(millis), 16))
    text = CROCKFORD[digits].tobytes().decode()
    return [f"{prefix}_{text[i : i + 26]}" for i in range(0, len(text), 26)]


def iso(seconds: np.ndarray) -> list[str]:
    return [datetime.fromtimestamp(s, UTC).isoformat() for s in seconds.tolist()]


def copy_rows(cursor, table: str, columns: list[str], rows) -> None:
    # Text COPY format: the generated text holds no tab, newline or backslash, so nothing needs escaping.
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        batch = []
        for row in rows:
            batch.append("\t".join(row))
            if len(batch) == 20_000:
                copy.write("\n".join(batch) + "\n")
                batch = []
        if batch:
            copy.write("\n".join(batch) + "\n")


MESSAGE_COLUMNS = [
    "id", "tenant_id", "conversation_id", "parent_id", "role", "content", "thinking", "status", "error",
    "input_tokens", "output_tokens", "attachments", "stream_index", "extra_events", "created_at", "completed_at",
]  # fmt: skip
CONVERSATION_COLUMNS = [
    "id", "tenant_id", "agent_id", "name", "title_source", "metadata", "message_count", "created_at",
    "updated_at", "current_message_id",
]  # fmt: skip


def tenant_rows(maker: TextMaker, rng: np.random.Generator, tenant_id: str, conversations: int, messages: int):
    """(message rows, their times, conversation rows, their times) of one tenant, as COPY text columns."""
    now = time.time()
    agents = []
    for i in range(AGENTS_PER_TENANT):
        agent = Agent(tenant_id=tenant_id, name=f"Search bench agent {i + 1}")
        agent.save(force_insert=True)
        agents.append(agent.id)

    # Messages per conversation: 2 or more, long-tailed, summing to `messages` exactly.
    weights = rng.lognormal(0.0, 0.8, conversations)
    counts = 2 + np.floor(weights / weights.sum() * (messages - 2 * conversations)).astype(np.int64)
    counts[rng.choice(conversations, messages - int(counts.sum()), replace=False)] += 1
    # Conversations start over the past year; replies follow each other by ~2 minutes.
    starts = now - 86400 - rng.random(conversations) * 364 * 86400
    gaps = rng.exponential(120.0, messages)
    conversation_of = np.repeat(np.arange(conversations), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    offsets = np.cumsum(gaps)
    offsets -= np.repeat(offsets[first], counts)
    created = starts[conversation_of] + offsets
    position = np.arange(messages) - np.repeat(first, counts)
    is_user = position % 2 == 0

    conversation_ids = ulids("conv", (starts * 1000).astype(np.int64), rng)
    message_ids = ulids("msg", (created * 1000).astype(np.int64), rng)
    lengths = np.where(
        is_user,
        np.clip(rng.lognormal(2.4, 0.6, messages), 3, 60),
        np.clip(rng.lognormal(4.3, 0.6, messages), 10, 400),
    ).astype(np.int64)
    texts = maker.texts(lengths)
    created_iso = iso(created)
    out_tokens = (lengths * 1.3).astype(np.int64).tolist()
    in_tokens = (lengths * 4).astype(np.int64).tolist()
    is_user, position, conversation_of = is_user.tolist(), position.tolist(), conversation_of.tolist()
    message_rows = [
        (
            message_ids[i],
            tenant_id,
            conversation_ids[conversation_of[i]],
            message_ids[i - 1] if position[i] else "\\N",
            "user" if is_user[i] else "assistant",
            texts[i],
            "",
            "completed",
            "",
            "0" if is_user[i] else str(in_tokens[i]),
            "0" if is_user[i] else str(out_tokens[i]),
            "{}",
            "[]",
            "[]",
            created_iso[i],
            "\\N" if is_user[i] else created_iso[i],
        )
        for i in range(messages)
    ]
    titles = [t.rstrip(".").capitalize() for t in maker.texts(rng.integers(2, 7, conversations))]
    last = (np.cumsum(counts) - 1).tolist()
    agent_of = rng.integers(0, AGENTS_PER_TENANT, conversations).tolist()
    conversation_rows = [
        (
            conversation_ids[c],
            tenant_id,
            agents[agent_of[c]],
            titles[c],
            "user",
            "{}",
            str(int(counts[c])),
            datetime.fromtimestamp(starts[c], UTC).isoformat(),
            created_iso[last[c]],
            message_ids[last[c]],
        )
        for c in range(conversations)
    ]
    return message_rows, created, conversation_rows, starts


def secondary_indexes(cursor, tables: list[str]) -> list[tuple[str, str]]:
    """(name, definition) of the tables' indexes that back no constraint."""
    cursor.execute(
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
        """,
        [tables],
    )
    return cursor.fetchall()


def seed(conversations: int, messages: int) -> None:
    rng = np.random.default_rng(SEED)
    maker = TextMaker(rng)
    tables = [Message._meta.db_table, Conversation._meta.db_table]
    # One transaction: an interrupted seed leaves the tables (and their dropped indexes) as they were.
    with transaction.atomic(), connection.cursor() as cursor:
        # As pg_restore does: load without secondary indexes and build them afterwards, which is several
        # times faster than maintaining ten of them (a GIN among them) row by row. Foreign keys are not
        # checked either (the rows are consistent by construction): replica role skips their triggers.
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
        indexes = secondary_indexes(cursor, tables)
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        deleted = 0
        for table in tables:
            cursor.execute(f"DELETE FROM {table} WHERE tenant_id = ANY(%s)", [list(TENANTS)])
            deleted += cursor.rowcount
        cursor.execute("DELETE FROM agents_agent WHERE tenant_id = ANY(%s)", [list(TENANTS)])
        cursor.execute("DELETE FROM tenants_apikey WHERE tenant_id = ANY(%s)", [list(TENANTS)])
        cursor.execute("DELETE FROM tenants_tenant WHERE id = ANY(%s)", [list(TENANTS)])
        started = time.perf_counter()
        messages_, message_times, conversations_, conversation_times = [], [], [], []
        for tenant_id in TENANTS:
            Tenant.objects.create(id=tenant_id, name=f"Search benchmark {tenant_id[-1].upper()}")
            rows = tenant_rows(maker, rng, tenant_id, conversations // len(TENANTS), messages // len(TENANTS))
            messages_ += rows[0]
            message_times.append(rows[1])
            conversations_ += rows[2]
            conversation_times.append(rows[3])
        print(f"  rows generated in {time.perf_counter() - started:.1f} s", flush=True)
        # In creation order, tenants interleaved, as the application inserts them: the newest messages of a
        # tenant sit together at the end of the table, not scattered over it.
        started = time.perf_counter()
        order = np.argsort(np.concatenate(message_times), kind="stable").tolist()
        copy_rows(cursor, Message._meta.db_table, MESSAGE_COLUMNS, (messages_[i] for i in order))
        order = np.argsort(np.concatenate(conversation_times), kind="stable").tolist()
        copy_rows(cursor, Conversation._meta.db_table, CONVERSATION_COLUMNS, (conversations_[i] for i in order))
        print(f"  rows copied in {time.perf_counter() - started:.1f} s", flush=True)
        if deleted:
            # New rows went to the space the deleted ones left, out of order: sort the tables again by
            # primary key, a ULID, hence by creation time.
            started = time.perf_counter()
            for table in tables:
                cursor.execute(f"CLUSTER {table} USING {table}_pkey")
            print(f"  tables sorted by creation time (CLUSTER) in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        for _, definition in indexes:
            cursor.execute(definition)
        print(f"  {len(indexes)} secondary indexes rebuilt in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for table in tables:  # visibility map and statistics, as autovacuum would soon have them
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    print(f"  VACUUM (ANALYZE) in {time.perf_counter() - started:.1f} s", flush=True)


# --- measuring ------------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def message_share(tenant_id: str, q: str) -> float:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FILTER (WHERE search_vector @@ websearch_to_tsquery('english', %s))::float8 / count(*) "
            f"FROM {Message._meta.db_table} WHERE tenant_id = %s",
            [q, tenant_id],
        )
        return cursor.fetchone()[0]


def query_classes(words: list[str]) -> dict[str, list[str]]:
    common = [words[r - 1] for r in COMMON_RANKS]
    return {
        "common word": common,
        "rare word": [words[r - 1] for r in RARE_RANKS],
        "phrase": ['"pull request"', '"unit test"', '"root cause"', '"rate limit"'],
        "exclusion": [f"{common[0]} -{common[1]}", f"{common[2]} -{common[3]}", f"{words[19]} -{words[29]}"],
    }


def measure(clients: dict[str, Client], queries: list[str], samples: int) -> tuple[list[float], list[float], int]:
    """Latencies (s) with and without highlights, alternating, over the queries and tenants in turn."""
    with_times, without_times, hits = [], [], 0
    plan = [(tenant_id, q) for q in queries for tenant_id in clients]
    for i in range(samples):
        tenant_id, q = plan[i % len(plan)]
        url = f"/tenants/{tenant_id}/api/v2/conversations/search"
        sides = [
            (with_times, {"q": q, "limit": LIMIT}),
            (without_times, {"q": q, "limit": LIMIT, "highlights": "false"}),
        ]
        for times, params in sides if i % 2 == 0 else reversed(sides):
            started = time.perf_counter()
            response = clients[tenant_id].get(url, params)
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{url} {params}: HTTP {response.status_code}: {response.content[:300]!r}")
            hits = max(hits, len(response.json()["items"]))
    return with_times, without_times, hits


def explain(tenant_id: str, q: str, highlights: bool = True) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement conversation_search sends for this query."""
    tenant = Tenant.objects.get(id=tenant_id)
    with CaptureQueriesContext(connection) as captured:
        conversation_search(tenant=tenant, q=q, limit=LIMIT, highlights=highlights)
    for query in captured.captured_queries:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query['sql']}")
            plan = [row[0] for row in cursor.fetchall()]
        print(f"\nEXPLAIN (ANALYZE, BUFFERS), {tenant_id}, q={q!r}:\n  {' '.join(query['sql'].split())}")
        print("\n".join(f"    {line}" for line in plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reseed", action="store_true", help="delete the benchmark tenants and seed them again")
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=40, help="requests per query class and side")
    parser.add_argument("--explain", action="store_true", help="print query plans of a common and a rare word")
    parser.add_argument(
        "--candidates", type=int, help="override conversations.search.CANDIDATE_MESSAGES, to try other caps"
    )
    args = parser.parse_args()

    if args.candidates is not None:
        search.CANDIDATE_MESSAGES = args.candidates
    db = connection.settings_dict
    print(
        f"Database {db['NAME']} on {db['HOST'] or 'local socket'}:{db['PORT']}; "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    seeded = Message.objects.filter(tenant_id__in=TENANTS).exists()
    if args.reseed or not seeded:
        print(f"Seeding {args.messages:,} messages over {args.conversations:,} conversations in {len(TENANTS)} tenants")
        started = time.perf_counter()
        seed(args.conversations, args.messages)
        print(f"Seeded in {time.perf_counter() - started:.1f} s")
    else:
        print("Reusing the seeded tenants (--reseed to start over)")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), pg_size_pretty(pg_total_relation_size('{Message._meta.db_table}')), "
            "pg_size_pretty(pg_relation_size('message_search')) "
            f"FROM {Message._meta.db_table} WHERE tenant_id = ANY(%s)",
            [list(TENANTS)],
        )
        count, table_size, gin_size = cursor.fetchone()
    print(f"{count:,} messages; message table {table_size} with indexes, GIN index message_search {gin_size}")

    words = TextMaker(np.random.default_rng(SEED)).content_words
    classes = query_classes(words)
    print()
    print("Share of a tenant's messages matching each query (bench-search-a):")
    for name, queries in classes.items():
        shares = ", ".join(f"{q} {message_share(TENANTS[0], q):.2%}" for q in queries)
        print(f"  {name:<12} {shares}")
    cap = getattr(search, "CANDIDATE_MESSAGES", None)
    print(f"conversations.search.CANDIDATE_MESSAGES = {cap if cap is not None else '(none: every match is ranked)'}")

    clients = {}
    keys = []
    for tenant_id in TENANTS:
        key, secret = api_key_create(tenant=Tenant.objects.get(id=tenant_id), name="search benchmark")
        keys.append(key.id)
        clients[tenant_id] = Client(HTTP_AUTHORIZATION=f"Bearer {secret}", HTTP_HOST="localhost")
    try:
        for queries in classes.values():  # warm-up: caches, plans, imports
            measure(clients, queries, 2 * len(queries) * len(TENANTS))
        print()
        print(
            f"Latency of GET .../conversations/search?q=...&limit={LIMIT}, in process (Django test client, one "
            f"persistent connection), {args.samples} requests per cell, tenants and words in turns"
        )
        print(f"  {'':<14}{'with highlights':>22}{'without':>22}{'ratio with/without':>22}{'max hits':>10}")
        print(f"  {'':<14}{'p50':>11}{'p95':>11}{'p50':>11}{'p95':>11}{'p50':>11}{'p95':>11}")
        worst_p95, worst_ratio = 0.0, 0.0
        for name, queries in classes.items():
            with_times, without_times, hits = measure(clients, queries, args.samples)
            w50, w95 = statistics.median(with_times) * 1000, percentile(with_times, 0.95) * 1000
            o50, o95 = statistics.median(without_times) * 1000, percentile(without_times, 0.95) * 1000
            worst_p95 = max(worst_p95, w95, o95)
            worst_ratio = max(worst_ratio, w95 / o95)
            print(
                f"  {name:<14}{w50:9.1f}ms{w95:9.1f}ms{o50:9.1f}ms{o95:9.1f}ms{w50 / o50:11.2f}{w95 / o95:11.2f}"
                f"{hits:>10}",
                flush=True,
            )
        print()
        print(f"  worst p95 {worst_p95:.1f} ms   goal <= 50 ms: {'met' if worst_p95 <= 50 else 'MISSED'}")
        ratio_verdict = "met" if worst_ratio <= 2 else "MISSED"
        print(f"  worst p95 ratio with/without {worst_ratio:.2f}   goal <= 2: {ratio_verdict}")
        print(f"Load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.explain:
            for q in (classes["common word"][0], classes["rare word"][0], classes["phrase"][0]):
                explain(TENANTS[0], q)
    finally:
        ApiKey.objects.filter(id__in=keys).delete()


if __name__ == "__main__":
    main()
