"""Full-text search over conversation titles and message content (PostgreSQL `websearch_to_tsquery`).

Conversations are ranked by their best match (a title match counts double), then by recency, and paged
with a keyset cursor over (rank, updated_at, id). Highlights are computed only for the page returned.

Ranking reads every matching row, so a word found in a fifth of a tenant's messages would cost a second.
So only the tenant's CANDIDATE_MESSAGES newest matching messages are ranked (titles are always all
ranked): with fewer matches than that the results are exact; with more, conversations matched only by
older messages are left out, a relevance/recency trade-off. Which index finds those newest matches
cheaply depends on how common the query is, and the planner cannot tell for phrases and several words
(it multiplies the words' frequencies, and "pull request" is as common as "pull"). So the query is first
tried on the tenant's PROBE_MESSAGES newest messages. If it matches at least COMMON_SHARE of them, the
newest messages are read in order until enough match (the (tenant, created_at) index). If it matches
fewer than WINDOW_SHARE, the GIN index finds every match. In between (around 1%), both would read tens of
thousands of rows, so the GIN bitmap is ANDed with the range of that index holding the messages newest
enough to give about WINDOW_FACTOR * CANDIDATE_MESSAGES matches at the probe's rate; if the window holds
fewer, older matches are read too, so the result is the same as reading every match. Elsewhere the tsquery
reaches the planner as a constant, for its estimates.

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
from conversations.selectors import ConversationFilters
from tenants.models import Tenant

CONFIG = "english"
QUERY_MAX_CHARS = 1000  # longer queries are cut: nobody types more, and tsquery size is bounded
HIGHLIGHTED_MESSAGES = 2  # per conversation
CANDIDATE_MESSAGES = 500  # newest matching messages ranked
PROBE_MESSAGES = 2000
COMMON_SHARE = 0.04  # from this share of the probe, newest messages are read in order
WINDOW_SHARE = 0.0075  # from this share up to COMMON_SHARE, matches are found in a window of recent messages
WINDOW_FACTOR = 1.25  # the window holds this many times the messages expected to give CANDIDATE_MESSAGES matches
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


@dataclass
class Probe:
    """The tsquery as text, and how many of the tenant's newest messages (`probed`, at most PROBE_MESSAGES,
    created from `since` to `until`) it matches."""

    tsquery: str
    matches: int
    probed: int
    since: datetime | None
    until: datetime | None


def _parse_and_probe(*, tenant: Tenant, q: str) -> Probe:
    sql = f"""
        SELECT query::text, recent.matches, recent.probed, recent.since, recent.until
        FROM websearch_to_tsquery(%(config)s::regconfig, %(q)s) query, LATERAL (
            SELECT count(*) FILTER (WHERE r.search_vector @@ query) AS matches, count(*) AS probed,
                   min(r.created_at) AS since, max(r.created_at) AS until
            FROM (
                SELECT m.search_vector, m.created_at FROM {Message._meta.db_table} m
                WHERE m.tenant_id = %(tenant)s
                ORDER BY m.created_at DESC, m.id DESC
                LIMIT %(probe)s
            ) r
        ) recent
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"tenant": tenant.id, "probe": PROBE_MESSAGES, "config": CONFIG, "q": q})
        return Probe(*cursor.fetchone())


def _candidate_messages(probe: Probe, params: dict, candidate_filters: str) -> str:
    """The SQL of the newest matching messages, read the way the probe's share of matches makes cheapest."""
    messages = Message._meta.db_table
    share = probe.matches / probe.probed if probe.probed == PROBE_MESSAGES else 0.0
    if share >= COMMON_SHARE:
        return f"""
            SELECT recent.conversation_id, recent.search_vector FROM (
                SELECT m.conversation_id, m.search_vector FROM {messages} m
                WHERE m.tenant_id = %(tenant)s {candidate_filters}
                ORDER BY m.created_at DESC, m.id DESC
                LIMIT %(read)s
            ) recent
            WHERE recent.search_vector @@ %(tsquery)s::tsquery
            LIMIT %(candidates)s
        """
    elif share >= WINDOW_SHARE:
        # The messages of about the newest WINDOW_FACTOR * CANDIDATE_MESSAGES / share, at the probe's rate.
        window = WINDOW_FACTOR * CANDIDATE_MESSAGES / probe.matches
        params["window_start"] = probe.until - (probe.until - probe.since) * window
        # The tsquery goes in as a subquery here: the planner then assumes a default share for it rather than
        # its estimate (for a phrase, the product of its words' shares, a hundred times too low), and so ANDs
        # the GIN bitmap with the window's range of the (tenant, created_at) index instead of reading every
        # match. Older matches are read only if the window held fewer than CANDIDATE_MESSAGES.
        return f"""
            WITH recent AS (
                SELECT m.conversation_id, m.search_vector FROM {messages} m
                WHERE m.tenant_id = %(tenant)s AND m.created_at >= %(window_start)s
                  AND m.search_vector @@ (SELECT %(tsquery)s::tsquery) {candidate_filters}
                ORDER BY m.created_at DESC, m.id DESC
                LIMIT %(candidates)s
            )
            SELECT conversation_id, search_vector FROM recent
            UNION ALL (
                SELECT m.conversation_id, m.search_vector FROM {messages} m
                WHERE m.tenant_id = %(tenant)s AND m.created_at < %(window_start)s
                  AND m.search_vector @@ %(tsquery)s::tsquery {candidate_filters}
                ORDER BY m.created_at DESC, m.id DESC
                LIMIT %(candidates)s - (SELECT count(*) FROM recent)
            )
        """
    return f"""
        SELECT m.conversation_id, m.search_vector FROM {messages} m
        WHERE m.tenant_id = %(tenant)s AND m.search_vector @@ %(tsquery)s::tsquery {candidate_filters}
        ORDER BY m.created_at DESC, m.id DESC
        LIMIT %(candidates)s
    """


def conversation_search(
    *,
    tenant: Tenant,
    q: str,
    limit: int,
    after: tuple[float, datetime, str] | None = None,
    agent_id: str | None = None,
    highlights: bool = True,
    conversation_filters: ConversationFilters | None = None,
) -> list[SearchHit]:
    """One page of hits (limit + 1 rows are read, so the caller can tell whether more exist)."""
    probe = _parse_and_probe(tenant=tenant, q=q[:QUERY_MAX_CHARS])
    tsquery = probe.tsquery
    if not tsquery:  # only stop words or punctuation
        return []
    conversations = Conversation._meta.db_table
    params: dict = {
        "tsquery": tsquery,
        "tenant": tenant.id,
        "limit": limit + 1,
        "candidates": CANDIDATE_MESSAGES,
        # Newest-first reading stops there even if fewer match: the probe said about COMMON_SHARE would.
        "read": int(CANDIDATE_MESSAGES / COMMON_SHARE),
    }
    candidate_filters, filters = "", ""
    if agent_id:
        candidate_filters = (
            f" AND m.conversation_id IN (SELECT id FROM {conversations} WHERE tenant_id = %(tenant)s"
            " AND agent_id = %(agent)s)"
        )
        filters += " AND c.agent_id = %(agent)s"
        params["agent"] = agent_id
    if conversation_filters is not None and (narrowed := conversation_filters.sql("c", params)):
        filters += narrowed
        # The newest matching messages are taken among the filtered conversations' only, or other
        # conversations' newer messages could fill every candidate place (as for agent_id above).
        candidate_filters += (
            f" AND m.conversation_id IN (SELECT c.id FROM {conversations} c WHERE c.tenant_id = %(tenant)s{narrowed})"
        )
    if after is not None:
        filters += " AND (r.rank, c.updated_at, c.id) < (%(after_rank)s, %(after_updated)s, %(after_id)s)"
        params.update(after_rank=after[0], after_updated=after[1], after_id=after[2])
    candidates = _candidate_messages(probe, params, candidate_filters)
    sql = f"""
        WITH candidates AS ({candidates}),
        matches AS (
            SELECT conversation_id AS id, max(ts_rank_cd(search_vector, %(tsquery)s::tsquery)) AS rank
            FROM candidates
            GROUP BY conversation_id
            UNION ALL
            SELECT c.id, 2 * ts_rank_cd(c.title_vector, %(tsquery)s::tsquery)
            FROM {conversations} c
            WHERE c.tenant_id = %(tenant)s AND c.title_vector @@ %(tsquery)s::tsquery
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
        _attach_highlights(tenant=tenant, tsquery=tsquery, hits=hits[:limit])
    return hits


def _attach_highlights(*, tenant: Tenant, tsquery: str, hits: list[SearchHit]) -> None:
    messages, conversations = Message._meta.db_table, Conversation._meta.db_table
    ids = [hit.id for hit in hits]
    sql = f"""
        SELECT c.id, 0 AS position,
               ts_headline(%(config)s::regconfig, translate(c.name, %(from)s, %(to)s), %(tsquery)s::tsquery,
                           %(options)s)
        FROM {conversations} c
        WHERE c.tenant_id = %(tenant)s AND c.id = ANY(%(ids)s) AND c.title_vector @@ %(tsquery)s::tsquery
        UNION ALL
        SELECT t.conversation_id, t.position,
               ts_headline(%(config)s::regconfig, translate(t.content, %(from)s, %(to)s), %(tsquery)s::tsquery,
                           %(options)s)
        FROM (
            SELECT m.conversation_id, m.content,
                   row_number() OVER (
                       PARTITION BY m.conversation_id
                       ORDER BY ts_rank_cd(m.search_vector, %(tsquery)s::tsquery) DESC, m.id
                   ) AS position
            FROM {messages} m
            WHERE m.tenant_id = %(tenant)s AND m.conversation_id = ANY(%(ids)s)
              AND m.search_vector @@ %(tsquery)s::tsquery
        ) t
        WHERE t.position <= %(per_conversation)s
        ORDER BY 1, 2
    """
    params = {
        "config": CONFIG,
        "tsquery": tsquery,
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
