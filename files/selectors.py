from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from conversations.models import Citation, Conversation, ToolCall
from core.errors import Invalid, NotFound
from core.pagination import decode_cursor, encode_cursor
from files.models import File, Passage
from tenants.models import Tenant

PASSAGES_PER_DOCUMENT = 100


def conversation_has_indexed_files() -> Exists:
    """Whether any file of the conversation has passages: an annotation for a query of conversations."""
    return Exists(Passage.objects.filter(file__conversation_id=OuterRef("pk")))


def file_list(*, tenant: Tenant, conversation: Conversation) -> QuerySet[File]:
    return File.objects.for_tenant(tenant).filter(conversation=conversation)


def file_get(*, tenant: Tenant, conversation: Conversation, file_ref: str) -> File:
    """A file of that conversation; a foreign or unknown ref is simply not found."""
    file = File.objects.for_tenant(tenant).filter(conversation=conversation, id=file_ref).first()
    if file is None:
        raise NotFound("File not found.", details={"file_ref": file_ref})
    return file


def file_refs_validate(
    *, tenant_id: str, conversation_id: str | None, refs: list[str], field: str = "attachments"
) -> list[File]:
    """The files `refs` name, in that order: files of the conversation, or tenant-level files when
    conversation_id is None. Any other ref is 400 naming `field`."""
    unique = list(dict.fromkeys(refs))
    if any(not isinstance(ref, str) for ref in unique):
        raise Invalid(f"{field}: every item must be a file_ref string.", details={field: refs})
    found = {
        file.id: file
        for file in File.objects.filter(tenant_id=tenant_id, conversation_id=conversation_id, id__in=unique)
    }
    unknown = [ref for ref in unique if ref not in found]
    if unknown:
        where = "this conversation" if conversation_id else "this tenant's files"
        raise Invalid(
            f"{field}: {unknown[0]!r} is not a file of {where}.",
            details={field: [f"Unknown file_ref: {ref}" for ref in unknown]},
        )
    return [found[ref] for ref in unique]


def files_as_context(files: list[File], *, max_chars: int) -> str:
    """The files' extracted text for a model's prompt, in order, cut at `max_chars` in all."""
    parts, budget = [], max_chars
    for file in files:
        if budget <= 0:
            break
        texts = []
        for text in Passage.objects.filter(file=file).order_by("ordinal").values_list("text", flat=True).iterator():
            texts.append(text[:budget])
            budget -= len(texts[-1])
            if budget <= 0:
                break
        parts.append(
            f"\n\n--- File {file.name} ({file.id}) ---\n" + ("\n".join(texts) or "(no text could be extracted)")
        )
    return "\n\nThe user attached these files:" + "".join(parts) if parts else ""


@dataclass
class RelatedDocument:
    citation: Citation
    file: File | None  # None for a cited URL
    tool_call: ToolCall | None = None  # whose result cited it (None for citations made before calls were kept)


def _related_citations(tenant: Tenant, conversation: Conversation) -> QuerySet[Citation]:
    # DISTINCT ON keeps each source's first citation: the earliest message, then the lowest number.
    return (
        Citation.objects.for_tenant(tenant)
        .filter(message__conversation=conversation)
        .order_by("source_id", "message__created_at", "number")
        .distinct("source_id")
    )


def _with_files(tenant: Tenant, citations: list[Citation]) -> list[RelatedDocument]:
    """The documents of the citations: each with its file, and the tool call whose result cited it."""
    files = File.objects.for_tenant(tenant).in_bulk([c.source_id for c in citations])
    made = Q()
    for citation in citations:
        if citation.tool_call_id:
            made |= Q(message_id=citation.message_id, call_id=citation.tool_call_id)
    calls = {}
    if made:
        calls = {(call.message_id, call.call_id): call for call in ToolCall.objects.for_tenant(tenant).filter(made)}
    return [
        RelatedDocument(citation=c, file=files.get(c.source_id), tool_call=calls.get((c.message_id, c.tool_call_id)))
        for c in citations
    ]


def related_document_list(
    *, tenant: Tenant, conversation: Conversation, limit: int, cursor: str | None
) -> tuple[list[RelatedDocument], str | None]:
    """Each source cited in the conversation once, by source id (file refs sort by upload time)."""
    citations = _related_citations(tenant, conversation)
    if cursor:
        (after,) = decode_cursor(cursor, [Citation._meta.get_field("source_id")])
        citations = citations.filter(source_id__gt=after)
    rows = list(citations[: limit + 1])
    next_cursor = encode_cursor([rows[limit - 1].source_id]) if len(rows) > limit else None
    return _with_files(tenant, rows[:limit]), next_cursor


def related_document_get(*, tenant: Tenant, conversation: Conversation, source_id: str) -> RelatedDocument:
    citation = _related_citations(tenant, conversation).filter(source_id=source_id).first()
    if citation is None:
        raise NotFound("Related document not found.", details={"source_id": source_id})
    return _with_files(tenant, [citation])[0]


def related_document_details(
    *, tenant: Tenant, conversation: Conversation, document: RelatedDocument
) -> dict[str, Any]:
    """Every citation of the source in the conversation and the file's first passages."""
    citations = list(
        Citation.objects.for_tenant(tenant)
        .filter(message__conversation=conversation, source_id=document.citation.source_id)
        .order_by("message__created_at", "number")
        .values("message_id", "number", "page", "snippet", "relevance_score", "quality_score")
    )
    passages: list[Passage] = []
    if document.file is not None:
        passages = list(
            Passage.objects.for_tenant(tenant)
            .filter(file=document.file)
            .order_by("ordinal")
            .only("ordinal", "page", "text")[:PASSAGES_PER_DOCUMENT]
        )
    return {"citations": citations, "passages": passages}


def preview_file_get(*, tenant: Tenant, conversation: Conversation, source_id: str) -> File:
    """A file of the conversation, or a file cited in it; anything else is not found."""
    cited = Citation.objects.for_tenant(tenant).filter(message__conversation=conversation, source_id=source_id)
    file = (
        File.objects.for_tenant(tenant)
        .filter(id=source_id)
        .filter(Q(conversation=conversation) | Q(id__in=cited.values("source_id")))
        .first()
    )
    if file is None:
        raise NotFound("Related document not found.", details={"source_id": source_id})
    return file


def file_get_for_signed_url(*, tenant_id: str, file_ref: str) -> File:
    # A deactivated tenant's links stop at once, like its keys, not when they expire.
    file = File.objects.filter(tenant_id=tenant_id, tenant__is_active=True, id=file_ref).first()
    if file is None:
        raise NotFound("File not found.")
    return file
