"""The raw reference of bench/rest_list.py: the conversation list as a bare ASGI app on async psycopg.

    DATABASE_URL=postgres://... .venv/bin/uvicorn bench.raw_list:app --loop uvloop --http httptools

No Django, no DRF, no serializer: `GET /tenants/{tid}/api/v2/agents/{aid}/conversations?limit=&next=` runs
the list endpoint's keyset query (same filter, ordering, row comparison after a cursor, limit + 1) on a
psycopg 3 `AsyncConnectionPool` and answers the endpoint's JSON, `{"items": [...], "next": cursor}`, with
the items' fields in the serializer's order and formats and the cursor encoded as core.pagination encodes it.

Like the bare view of bench/urls.py it does no authentication, no throttling and no agent lookup (an unknown
agent or tenant gives an empty page, not 404); it selects only the eight columns it shows, where the list
endpoint's queryset selects the whole row. Errors of `limit` and `next` are 400 in the API's error shape. Its
responses carry only Content-Type and Content-Length (the project adds Allow and its security headers).
GET /healthz answers 200 once the pool is open.

The pool opens at lifespan start-up (a database that cannot be reached fails the start-up) and closes at
shutdown; it is sized as bench/settings.py sizes the project's under BENCH_DB_POOL, with autocommit
connections as Django uses them (no COMMIT round trip per request), and psycopg's defaults otherwise
(server-side parameters, statements prepared from their fifth execution).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from psycopg_pool import AsyncConnectionPool

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
POOL_MIN_SIZE = 4
POOL_MAX_SIZE = int(os.environ.get("REQUEST_SYNC_THREADS", "16")) + 16  # bench/settings.py's, read the same way

COLUMNS = "id, name, agent_id, title_source, created_at, updated_at, message_count, metadata"
ORDER = "ORDER BY updated_at DESC, id DESC LIMIT %s"
FIRST_PAGE_SQL = f"SELECT {COLUMNS} FROM conversations_conversation WHERE tenant_id = %s AND agent_id = %s {ORDER}"
NEXT_PAGE_SQL = (
    f"SELECT {COLUMNS} FROM conversations_conversation "
    f"WHERE tenant_id = %s AND agent_id = %s AND (updated_at, id) < (%s, %s) {ORDER}"
)

Scope = dict[str, Any]


class BadRequest(Exception):
    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message)
        self.message = message
        self.details = details


def iso(value: datetime) -> str:
    """As DRF's DateTimeField shows an aware datetime under TIME_ZONE = "UTC"."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_cursor(updated_at: datetime, id_: str) -> str:
    """core.pagination.encode_cursor of the last row's (updated_at, id)."""
    raw = json.dumps([updated_at.astimezone(UTC).isoformat(), id_], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != 2 or not all(isinstance(v, str) for v in values):
            raise ValueError
        updated_at = datetime.fromisoformat(values[0])
        if "\x00" in values[1]:
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("next: malformed pagination cursor.", {"next": cursor}) from None
    # A naive time is in TIME_ZONE, as Django's DateTimeField reads it.
    return (updated_at if updated_at.tzinfo else updated_at.replace(tzinfo=UTC)), values[1]


def parse_limit(raw: str | None) -> int:
    if not raw:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}.", {"limit": raw})
    return limit


def render(data: Any) -> bytes:
    """As DRF's JSONRenderer with the project's settings: compact, UTF-8, U+2028/U+2029 escaped."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


async def respond(send, status: int, data: Any) -> None:
    body = render(data)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


async def conversation_page(pool: AsyncConnectionPool, tenant_id: str, agent_id: str, query: dict) -> dict:
    limit = parse_limit(query.get("limit", [None])[-1])
    cursor = query.get("next", [None])[-1]
    if cursor:
        updated_at, id_ = decode_cursor(cursor)
        sql, params = NEXT_PAGE_SQL, (tenant_id, agent_id, updated_at, id_, limit + 1)
    else:
        sql, params = FIRST_PAGE_SQL, (tenant_id, agent_id, limit + 1)
    async with pool.connection() as connection:
        rows = await (await connection.execute(sql, params)).fetchall()
    next_cursor = encode_cursor(rows[limit - 1][5], rows[limit - 1][0]) if len(rows) > limit else None
    items = [
        {
            "id": id_,
            "name": name,
            "agent_id": agent,
            "title_source": title_source,
            "created_at": iso(created_at),
            "updated_at": iso(updated_at),
            "message_count": message_count,
            "metadata": metadata,
        }
        for id_, name, agent, title_source, created_at, updated_at, message_count, metadata in rows[:limit]
    ]
    return {"items": items, "next": next_cursor}


async def lifespan(scope: Scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            pool = AsyncConnectionPool(
                os.environ["DATABASE_URL"],
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                kwargs={"autocommit": True},
                open=False,
            )
            try:
                await pool.open(wait=True, timeout=10)
            except Exception as exc:  # the server must not start without its database
                await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                return
            scope["state"]["pool"] = pool
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await scope["state"]["pool"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported ASGI scope {scope['type']!r}")
    if scope["method"] != "GET":
        return await respond(send, 405, error("method_not_allowed", f'Method "{scope["method"]}" not allowed.'))
    match scope["path"].split("/"):
        case ["", "healthz"]:
            await respond(send, 200, {"status": "ok"})
        case ["", "tenants", tenant_id, "api", "v2", "agents", agent_id, "conversations"]:
            query = parse_qs(scope["query_string"].decode("latin-1"))
            try:
                page = await conversation_page(scope["state"]["pool"], tenant_id, agent_id, query)
            except BadRequest as exc:
                return await respond(send, 400, error("invalid", exc.message, exc.details))
            await respond(send, 200, page)
        case _:
            await respond(send, 404, error("not_found", "Not found."))
