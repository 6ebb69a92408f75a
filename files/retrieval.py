"""Passage retrieval with PostgreSQL full-text search, shared by the builtin engine and the file tools.

A question is first matched with all of its terms (`websearch_to_tsquery`); when no passage has them all,
with any of them. Passages are ranked with `ts_rank_cd` (cover density: how close together the terms are).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection, models
from django.db.models import F, Func, QuerySet

from conversations.search import QUERY_MAX_CHARS
from files.extraction import sentences_split
from files.models import File, Passage

_WORD = re.compile(r"\w+")


@dataclass
class Hit:
    passage: Passage
    relevance: float  # ts_rank_cd normalised to 0–1 (rank / (rank + 1))
    coverage: float  # share of the question's distinct search terms the passage contains
    lexemes: set[str] = field(default_factory=set)

    @property
    def quality(self) -> float:
        """quality = 0.6 × coverage + 0.4 × relevance, in 0–1.

        Coverage weighs most: a passage holding every term of the question is likelier to answer it than
        one that repeats a single term densely; relevance (cover density) breaks ties between those."""
        return round(0.6 * self.coverage + 0.4 * self.relevance, 3)

    @property
    def file(self) -> File:
        return self.passage.file


def passage_scope(*, tenant_id: str, conversation_id: str | None, file_refs: Sequence[str] = ()) -> QuerySet[Passage]:
    """Passages of the conversation's files (only those in `file_refs` when given), or of the tenant-level
    files `file_refs` names when conversation_id is None."""
    scope = Passage.objects.filter(tenant_id=tenant_id)
    if conversation_id is None:
        if not file_refs:
            return scope.none()
        scope = scope.filter(file__conversation__isnull=True)
    else:
        scope = scope.filter(file__conversation_id=conversation_id)
    if file_refs:
        scope = scope.filter(file_id__in=list(file_refs))
    return scope


def indexed_files(*, tenant_id: str, conversation_id: str | None, file_refs: Sequence[str] = ()) -> list[File]:
    """The files in scope that have at least one passage, oldest first."""
    scope = passage_scope(tenant_id=tenant_id, conversation_id=conversation_id, file_refs=file_refs)
    return list(File.objects.filter(tenant_id=tenant_id, id__in=scope.values("file_id")).order_by("created_at", "id"))


def lexemes_of(texts: list[str]) -> list[set[str]]:
    """The English search lexemes of each text (stemmed, without stop words), in one query."""
    if not texts:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tsvector_to_array(to_tsvector('english', t)) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
            [texts],
        )
        return [set(row[0]) for row in cursor.fetchall()]


def _ranked(scope: QuerySet[Passage], query: SearchQuery, limit: int) -> list[tuple[Passage, float, list[str]]]:
    rows = (
        scope.filter(search_vector=query)
        .annotate(
            rank=SearchRank(F("search_vector"), query, cover_density=True, normalization=32),
            lexemes=Func(F("search_vector"), function="tsvector_to_array", output_field=ArrayField(models.TextField())),
        )
        .select_related("file")
        .order_by("-rank", "file_id", "ordinal")[:limit]
    )
    return [(row, float(row.rank), row.lexemes) for row in rows]


def passage_search(
    *, tenant_id: str, conversation_id: str | None, query: str, file_refs: Sequence[str] = (), limit: int = 5
) -> list[Hit]:
    """The passages in scope that best match `query`, best first."""
    query = query[:QUERY_MAX_CHARS]  # a 100,000-character message would make a huge tsquery, twice
    words = _WORD.findall(query)
    if not words:
        return []
    (terms,) = lexemes_of([query])
    if not terms:
        return []  # only stop words
    scope = passage_scope(tenant_id=tenant_id, conversation_id=conversation_id, file_refs=file_refs)
    rows = _ranked(scope, SearchQuery(query, search_type="websearch", config="english"), limit)
    if not rows:
        any_term = SearchQuery(" or ".join(words), search_type="websearch", config="english")
        rows = _ranked(scope, any_term, limit)
    hits = []
    for passage, rank, lexemes in rows:
        found = terms & set(lexemes)
        hits.append(
            Hit(passage=passage, relevance=round(rank, 3), coverage=round(len(found) / len(terms), 3), lexemes=terms)
        )
    return hits


def best_sentences(hits: list[Hit], *, per_passage: int = 2) -> list[list[str]]:
    """For each hit, its sentences sharing most search terms with the question (in reading order)."""
    sentences = [sentences_split(hit.passage.text) for hit in hits]
    flat = [sentence for group in sentences for sentence in group]
    flat_lexemes = iter(lexemes_of(flat))
    chosen: list[list[str]] = []
    for hit, group in zip(hits, sentences, strict=True):
        scored = [(len(hit.lexemes & next(flat_lexemes)), index) for index in range(len(group))]
        best = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))[:per_passage]
        picked = [group[index] for _, index in sorted(best, key=lambda s: s[1])]
        chosen.append(picked or group[:1])
    return chosen
