"""File tools for engines that call tools (the openai engine): the same retrieval as the builtin engine."""

from __future__ import annotations

from typing import Any

from django.core.files.base import ContentFile

from agents.engines.base import Citations
from agents.tools import KeptFile, Tool, ToolContext, ToolResult
from core.db import in_worker
from files.builtin import citation_item
from files.models import ExtractionStatus, File, Origin
from files.retrieval import best_sentences, passage_scope, passage_search
from files.services import file_create_many
from tenants.models import Tenant

READ_MAX_CHARS = 20_000


def _search(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        return ToolResult(text="search_files needs a non-empty `query` string.")
    limit = arguments.get("limit", 5)
    limit = min(max(limit, 1), 10) if isinstance(limit, int) and not isinstance(limit, bool) else 5
    hits = passage_search(
        tenant_id=context.tenant_id,
        conversation_id=context.conversation_id,
        file_refs=context.file_refs,
        query=query,
        limit=limit,
    )
    if not hits:
        return ToolResult(text=f"No passage of the files matches {query!r}.")
    sentences = best_sentences(hits)
    blocks, items = [], []
    for number, (hit, picked) in enumerate(zip(hits, sentences, strict=True), start=context.first_citation):
        page = f", page {hit.passage.page}" if hit.passage.page else ""
        blocks.append(f"[{number}] {hit.file.name} (file_ref {hit.file.id}{page}):\n{hit.passage.text}")
        items.append(citation_item(hit, picked, number=number))
    text = "Passages (cite them with their [n] markers):\n\n" + "\n\n".join(blocks)
    return ToolResult(text=text, events=[Citations(items=items)])


def _read(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    file_ref = arguments.get("file_ref")
    page = arguments.get("page")
    if not isinstance(file_ref, str) or not file_ref:
        return ToolResult(text="read_file needs a `file_ref` string.")
    if page is not None and (not isinstance(page, int) or isinstance(page, bool) or page < 1):
        return ToolResult(text="read_file: `page` must be a positive integer.")
    files = File.objects.filter(tenant_id=context.tenant_id, id=file_ref)
    if context.conversation_id is None:
        files = files.filter(conversation__isnull=True, id__in=list(context.file_refs))
    else:
        files = files.filter(conversation_id=context.conversation_id)
    file = files.first()
    if file is None:
        return ToolResult(text=f"There is no file {file_ref!r} here.")
    header = f"{file.name} ({file.content_type}, {file.size} bytes"
    header += f", {file.page_count} pages)" if file.page_count else ")"
    if file.extraction_status != ExtractionStatus.DONE:
        reason = f": {file.extraction_error}" if file.extraction_error else ""
        return ToolResult(text=f"{header}\nIts text is not available ({file.extraction_status}{reason}).")
    passages = passage_scope(
        tenant_id=context.tenant_id, conversation_id=context.conversation_id, file_refs=[file.id]
    ).order_by("ordinal")
    if page is not None:
        passages = passages.filter(page=page)
    parts, size = [], 0
    for passage in passages.only("text").iterator():
        if size + len(passage.text) > READ_MAX_CHARS:
            parts.append("[… truncated; read a single page with `page`]")
            break
        parts.append(passage.text)
        size += len(passage.text)
    if not parts:
        return ToolResult(text=f"{header}\nNo text" + (f" on page {page}." if page else "."))
    return ToolResult(text=header + (f", page {page}" if page else "") + "\n" + "\n".join(parts))


async def search_files(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    return await in_worker(_search)(context, arguments)


async def read_file(context: ToolContext, arguments: dict[str, Any]) -> ToolResult:
    return await in_worker(_read)(context, arguments)


TOOLS = [
    Tool(
        name="search_files",
        description="Full-text search over the text of the conversation's files; returns the best passages "
        "with their file, page and a [n] marker to cite.",
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Words or a question to search for."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 10, "description": "Passages (default 5)."},
            },
            "required": ["query"],
        },
        run=search_files,
    ),
    Tool(
        name="read_file",
        description="Read the extracted text of one of the conversation's files, or of one page of it.",
        parameters={
            "type": "object",
            "properties": {
                "file_ref": {"type": "string", "description": "The file's reference, e.g. file_01…"},
                "page": {"type": "integer", "minimum": 1, "description": "A 1-based page (paged documents)."},
            },
            "required": ["file_ref"],
        },
        run=read_file,
    ),
]


def tool_file_keep(context: ToolContext, name: str, data: bytes) -> KeptFile:
    """A file a tool returned (an MCP server's image, say), kept as the agent's in the conversation."""
    (file,) = file_create_many(
        tenant=Tenant.objects.get(pk=context.tenant_id),
        conversation_id=context.conversation_id,
        uploads=[ContentFile(data, name=name)],
        origin=Origin.AGENT,
        message_id=context.message_id,
    )
    return KeptFile(file_ref=file.id, name=file.name, content_type=file.content_type)
