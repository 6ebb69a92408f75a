"""The builtin engine's retrieval mode: answer from the conversation's files with numbered citations."""

from __future__ import annotations

from typing import Any

from agents.engines.base import BuiltinAnswer, Citations, ToolCallEnded, ToolCallStarted, TurnContext
from files.retrieval import Hit, best_sentences, indexed_files, passage_search

MAX_CITED_PASSAGES = 3
SNIPPET_CHARS = 300
SEARCH_CALL_ID = "builtin_search_files"  # (one call a reply: the same on a resumed run)


def _names(files) -> str:
    names = [f"{file.name} ({file.id})" for file in files[:5]]
    return ", ".join(names) + (f" and {len(files) - 5} more" if len(files) > 5 else "")


def clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1].rstrip() + "…"


def citation_item(hit: Hit, sentences: list[str], *, number: int) -> dict[str, Any]:
    """A passage as a `citations` event item, its snippet the sentences picked from it."""
    return {
        "number": number,
        "source_id": hit.file.id,
        "source_name": hit.file.name,
        "url": "",
        "page": hit.passage.page,
        "snippet": clip(" ".join(sentences), SNIPPET_CHARS),
        "relevance_score": hit.relevance,
        "quality_score": hit.quality,
    }


def _citation_items(hits: list[Hit], sentences: list[list[str]]) -> tuple[list[dict[str, Any]], list[int]]:
    """One citation per (file, page); returns the items and each hit's citation number."""
    items: list[dict[str, Any]] = []
    numbers: list[int] = []
    by_source: dict[tuple[str, int | None], dict[str, Any]] = {}
    for hit, picked in zip(hits, sentences, strict=True):
        key = (hit.file.id, hit.passage.page)
        item = by_source.get(key)
        if item is None:
            item = citation_item(hit, picked, number=len(items) + 1)
            by_source[key] = item
            items.append(item)
        numbers.append(item["number"])
    return items, numbers


def may_answer_from_files(context: TurnContext) -> bool:
    """False when there is surely nothing to search (no attachments, no indexed file), without a query."""
    return bool(context.attachments) or context.has_indexed_files is not False


def answer_from_files(context: TurnContext) -> BuiltinAnswer | None:
    """Answer the question from the conversation's indexed files (only the attached ones when the message
    has attachments; with no conversation, the tenant-level files attached); None when there are none."""
    if not may_answer_from_files(context):
        return None
    refs = list(context.attachments)
    files = indexed_files(tenant_id=context.tenant_id, conversation_id=context.conversation_id, file_refs=refs)
    if not files:
        return None
    question = " ".join(context.question.split())
    steps = [f'Searching {len(files)} indexed file(s) for "{clip(question, 200)}": {_names(files)}.']
    hits = passage_search(
        tenant_id=context.tenant_id,
        conversation_id=context.conversation_id,
        file_refs=refs,
        query=question,
        limit=MAX_CITED_PASSAGES,
    )
    search = ToolCallStarted(SEARCH_CALL_ID, "search_files", {"query": question, "limit": MAX_CITED_PASSAGES})
    if not hits:
        steps.append("No passage matched any search term of the question.")
        text = (
            f"I searched {len(files)} file(s) ({', '.join(f.name for f in files[:5])}) but found nothing about "
            f'"{clip(question, 200)}". Try other words, or ask about what the files contain.'
        )
        found = ToolCallEnded(SEARCH_CALL_ID, "ok", "No passage matched.")
        return BuiltinAnswer(steps=steps, text=text, call=[search, found])

    sentences = best_sentences(hits)
    items, numbers = _citation_items(hits, sentences)
    for hit, number in zip(hits, numbers, strict=True):
        page = f", page {hit.passage.page}" if hit.passage.page else ""
        steps.append(
            f"Using passage {hit.passage.ordinal + 1} of {hit.file.name}{page} as [{number}] "
            f"(relevance {hit.relevance:.2f}, {round(hit.coverage * 100)}% of the search terms)."
        )
    lines: list[str] = []
    seen: set[str] = set()
    for picked, number in zip(sentences, numbers, strict=True):
        fresh = [s for s in picked if s not in seen]
        seen.update(fresh)
        if fresh:
            lines.append(f"- {' '.join(fresh)} [{number}]")
    text = "From your files:\n\n" + "\n".join(lines)
    passages = "\n\n".join(
        f"[{number}] {hit.file.name}{f', page {hit.passage.page}' if hit.passage.page else ''}: {hit.passage.text}"
        for hit, number in zip(hits, numbers, strict=True)
    )
    found = ToolCallEnded(SEARCH_CALL_ID, "ok", passages)
    return BuiltinAnswer(steps=steps, text=text, events=[Citations(items=items)], call=[search, found])
