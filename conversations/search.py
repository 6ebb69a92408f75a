"""Full-text search over conversation titles and message content (PostgreSQL `websearch_to_tsquery`).

Conversations are ranked by their best match (a title match counts double), then by recency, and paged
with a keyset cursor over (rank, updated_at, id). Highlights are computed only for the page returned.
`ts_headline` parses HTML (it would drop tags from the text), so `<`, `>` and `&` go in as private-use
characters, matches come out between two more of them, and Python turns those into escaped text and
<mark> tags.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection

from conversations.models import Conversation, Message
from tenants.models import Tenant

CONFIG = "english"
QUERY_MAX_CHARS = 1000  # longer queries are cut: nobody types more, and tsquery size is bounded
HIGHLIGHTED_MESSAGES = 2  # per conversation
START, STOP, LT, GT, AMP = "\ue000", "\ue001", "\ue002", "\ue003", "\ue004"
# translate(text, FROM, TO): <, > and & become LT, GT and AMP; sentinels already in the text are dropped.
TRANSLATE_FROM, TRANSLATE_TO = f"<>&{START}{STOP}{LT}{GT}{AMP}", f"{LT}{GT}{AMP}"
HEADLINE_OPTIONS = (
    f"StartSel={START}, StopSel={STOP}, MaxWords=24, MinWords=8, MaxFragments=2, "
    'FragmentDelimiter=" … ", HighlightAll=false'
)


@dataclass
class SearchHit:
    id: str
    title: str
    updated_at: datetime
    agent_id: str
    rank: float
    highlights: list[str] = field(default_factory=list)


def _marked(headline: str) -> str:
    escaped = html.escape(headline, quote=False)  # the text holds no <, > or & any more; this is a safety net
    for sentinel, markup in ((LT, "&lt;"), (GT, "&gt;"), (AMP, "&amp;"), (START, "<mark>"), (STOP, "</mark>")):
        escaped = escaped.replace(sentinel, markup)
    return escaped


def conversation_search(
    *,
    tenant: Tenant,
    q: str,
    limit: int,
    after: tuple[float, datetime, str] | None = None,
    agent_id: str | None = None,
    highlights: bool = True,
) -> list[SearchHit]:
    """One page of hits (limit + 1 rows are read, so the caller can tell whether more exist)."""
    messages, conversations = Message._meta.db_table, Conversation._meta.db_table
    params: dict = {"q": q[:QUERY_MAX_CHARS], "tenant": tenant.id, "limit": limit + 1, "config": CONFIG}
    filters = ""
    if agent_id:
        filters += " AND c.agent_id = %(agent)s"
        params["agent"] = agent_id
    if after is not None:
        filters += " AND (r.rank, c.updated_at, c.id) < (%(after_rank)s, %(after_updated)s, %(after_id)s)"
        params.update(after_rank=after[0], after_updated=after[1], after_id=after[2])
    sql = f"""
        WITH query AS (SELECT websearch_to_tsquery(%(config)s::regconfig, %(q)s) AS q),
        matches AS (
            SELECT m.conversation_id AS id, max(ts_rank_cd(m.search_vector, query.q)) AS rank
            FROM {messages} m, query
            WHERE m.tenant_id = %(tenant)s AND m.search_vector @@ query.q
            GROUP BY m.conversation_id
            UNION ALL
            SELECT c.id, 2 * ts_rank_cd(c.title_vector, query.q)
            FROM {conversations} c, query
            WHERE c.tenant_id = %(tenant)s AND c.title_vector @@ query.q
        ),
        ranked AS (SELECT id, max(rank)::float8 AS rank FROM matches GROUP BY id)
        SELECT c.id, c.name, c.updated_at, c.agent_id, r.rank
        FROM ranked r JOIN {conversations} c ON c.id = r.id
        WHERE c.tenant_id = %(tenant)s {filters}
        ORDER BY r.rank DESC, c.updated_at DESC, c.id DESC
        LIMIT %(limit)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        hits = [SearchHit(*row) for row in cursor.fetchall()]
    if highlights and hits:
        _attach_highlights(tenant=tenant, q=params["q"], hits=hits[:limit])
    return hits


def _attach_highlights(*, tenant: Tenant, q: str, hits: list[SearchHit]) -> None:
    messages, conversations = Message._meta.db_table, Conversation._meta.db_table
    ids = [hit.id for hit in hits]
    sql = f"""
        WITH query AS (SELECT websearch_to_tsquery(%(config)s::regconfig, %(q)s) AS q)
        SELECT c.id, 0 AS position,
               ts_headline(%(config)s::regconfig, translate(c.name, %(from)s, %(to)s), query.q, %(options)s)
        FROM {conversations} c, query
        WHERE c.tenant_id = %(tenant)s AND c.id = ANY(%(ids)s) AND c.title_vector @@ query.q
        UNION ALL
        SELECT t.conversation_id, t.position,
               ts_headline(%(config)s::regconfig, translate(t.content, %(from)s, %(to)s), query.q, %(options)s)
        FROM query, (
            SELECT m.conversation_id, m.content,
                   row_number() OVER (
                       PARTITION BY m.conversation_id ORDER BY ts_rank_cd(m.search_vector, query.q) DESC, m.id
                   ) AS position
            FROM {messages} m, query
            WHERE m.tenant_id = %(tenant)s AND m.conversation_id = ANY(%(ids)s) AND m.search_vector @@ query.q
        ) t
        WHERE t.position <= %(per_conversation)s
        ORDER BY 1, 2
    """
    params = {
        "config": CONFIG,
        "q": q,
        "tenant": tenant.id,
        "ids": ids,
        "from": TRANSLATE_FROM,
        "to": TRANSLATE_TO,
        "options": HEADLINE_OPTIONS,
        "per_conversation": HIGHLIGHTED_MESSAGES,
    }
    by_id = {hit.id: hit for hit in hits}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for conversation_id, _position, headline in cursor.fetchall():
            if START in headline:
                by_id[conversation_id].highlights.append(_marked(headline))
