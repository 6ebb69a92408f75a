"""A conversation as one document, and back: export (its whole tree with citations, tool calls and
feedback, its files and data frames), import (recreated with new ids, in any tenant and deployment) and
fork (a branch of it recreated as a new conversation, its files and frames copied). Here, in turns, because
a conversation's parts live in every app below.

The document is a plain dict whose keys are those of turns.serializers.ConversationDocumentSerializer,
which renders it (export) and validates it (import). Inside the server its file and frame entries may carry
a `storage_key` instead of their bytes (a fork copies them from storage)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.base import File as DjangoFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent
from conversations.models import Citation, Conversation, Feedback, Message, MessageStatus, ToolCall
from conversations.selectors import message_branch
from conversations.services import conversation_create
from core.errors import Conflict, Invalid, PayloadTooLarge
from core.ids import new_id
from dataframes.models import DataFrame
from dataframes.parquet import stored_parquet
from dataframes.services import dataframe_create_from_parquet
from files.models import File
from files.services import file_prepare, files_insert, files_store
from files.storage import stored_bytes_delete

DOCUMENT_FORMAT = "parley.conversation"
DOCUMENT_VERSION = 1
# A file's or frame's id inside text (a reply that names it, a tool result): remapped where it occurs. Ids
# are a prefix and 26 characters, so the new one has the old one's length and the stream index stays true.
_ID_IN_TEXT = re.compile(r"\b(?:file|df|msg|conv)_[0-9a-z]{26}\b")

MESSAGE_FIELDS = (
    "id", "parent_id", "role", "content", "thinking", "status", "error", "input_tokens", "output_tokens",
    "attachments", "metadata", "engine", "model", "finish_reason", "created_at", "completed_at",
)  # fmt: skip
CITATION_FIELDS = (
    "number", "source_id", "source_name", "url", "page", "snippet", "relevance_score", "quality_score",
    "tool_call_id",
)  # fmt: skip
FEEDBACK_FIELDS = ("thumbs_up", "category", "comment", "created_at", "updated_at")
FILE_FIELDS = ("id", "name", "content_type", "size", "sha256", "origin", "message_id", "page_count", "created_at")
FRAME_FIELDS = ("id", "name", "row_count", "schema", "message_id", "created_at")


# --- The document ---------------------------------------------------------------------------------------


def conversation_document(
    *, conversation: Conversation, tip_id: str | None = None, feedback: bool = True
) -> dict[str, Any]:
    """The conversation as a document, without its files' and frames' bytes (document_bytes_read adds
    them): every message, or with `tip_id` only the branch from the root to it; with the files and frames
    of the messages it holds and those no message produced (uploads)."""
    tenant_id = conversation.tenant_id
    messages = Message.objects.filter(tenant_id=tenant_id, conversation=conversation)
    if tip_id is not None:
        messages = messages.filter(
            id__in=[message.id for message in message_branch(conversation=conversation, tip_id=tip_id)]
        )
    messages = _parents_first(list(messages.for_display().order_by("created_at", "id")))
    ids = [message.id for message in messages]
    # The files the messages made, attached or cited, and the uploads no reply made.
    referenced = {ref for message in messages for ref in message.attachments}
    referenced |= {citation.source_id for message in messages for citation in message.cited}
    of_these = Q(message_id__isnull=True) | Q(message_id__in=ids)
    files = File.objects.filter(tenant_id=tenant_id, conversation=conversation).filter(of_these | Q(id__in=referenced))
    frames = DataFrame.objects.filter(tenant_id=tenant_id, conversation=conversation).filter(of_these)
    current = tip_id if tip_id is not None else conversation.current_message_id
    return {
        "format": DOCUMENT_FORMAT,
        "version": DOCUMENT_VERSION,
        "exported_at": timezone.now(),
        "conversation": {
            **_fields(conversation, ("id", "agent_id", "name", "title_source", "user_id", "metadata")),
            **_fields(conversation, ("archived", "pinned", "created_at", "updated_at")),
            "current_message_id": current,
        },
        "messages": [_message_entry(message, feedback=feedback) for message in messages],
        "files": [
            {**_fields(file, FILE_FIELDS), "storage_key": file.storage_key}
            for file in files.order_by("created_at", "id")
        ],
        "data_frames": [
            {**_fields(frame, FRAME_FIELDS), "storage_key": frame.storage_key}
            for frame in frames.order_by("created_at", "id")
        ],
    }


def _parents_first(messages: list[Message]) -> list[Message]:
    """In their order, but each after its parent (times an import kept may disagree with the tree)."""
    present = {message.id for message in messages}
    placed: list[Message] = []
    placed_ids: set[str] = set()
    waiting: dict[str, list[Message]] = {}  # by the parent they wait for
    for message in messages:
        if message.parent_id in present and message.parent_id not in placed_ids:
            waiting.setdefault(message.parent_id, []).append(message)
            continue
        pending = [message]
        while pending:
            current = pending.pop()
            placed.append(current)
            placed_ids.add(current.id)
            pending.extend(reversed(waiting.pop(current.id, [])))
    return placed


def _fields(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


def _message_entry(message: Message, *, feedback: bool) -> dict[str, Any]:
    rated = getattr(message, "feedback", None) if feedback else None
    return {
        **_fields(message, MESSAGE_FIELDS),
        "citations": [_fields(citation, CITATION_FIELDS) for citation in message.cited],
        "tool_calls": [
            {"id": call.call_id, **_fields(call, ("name", "arguments", "status", "content", "content_type"))}
            for call in message.calls
        ],
        "feedback": _fields(rated, FEEDBACK_FIELDS) if rated is not None else None,
        # The stream log, which only a fork carries over (an export's reader has the rows).
        "stream_index": message.stream_index,
        "extra_events": message.extra_events,
    }


def document_bytes_read(document: dict[str, Any]) -> None:
    """Put each file's and frame's stored bytes into the document (`content`; None for bytes missing from
    storage). 413 when they would make a document larger than an import takes (IMPORT_MAX_BYTES)."""
    entries = [*document["files"], *document["data_frames"]]
    total = sum(entry["size"] for entry in document["files"])
    for entry in document["data_frames"]:
        with suppress(FileNotFoundError):
            total += default_storage.size(entry["storage_key"])
    if total * 4 // 3 > settings.IMPORT_MAX_BYTES:  # (as base64)
        raise PayloadTooLarge(
            f"The conversation's files and data frames hold {total} bytes: as base64 more than an import takes "
            f"(IMPORT_MAX_BYTES, {settings.IMPORT_MAX_BYTES} bytes). Export with include_bytes=false for their "
            "references only.",
            details={"limit": "IMPORT_MAX_BYTES", "max_bytes": settings.IMPORT_MAX_BYTES, "bytes": total},
        )
    for entry in entries:
        try:
            with default_storage.open(entry["storage_key"], "rb") as stored:
                entry["content"] = stored.read()
        except FileNotFoundError:
            entry["content"] = None


def active_branch(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's messages from the root to its current message."""
    by_id = {message["id"]: message for message in document["messages"]}
    branch, tip = [], by_id.get(document["conversation"]["current_message_id"] or "")
    while tip is not None and len(branch) <= len(by_id):
        branch.append(tip)
        tip = by_id.get(tip["parent_id"] or "")
    return branch[::-1]


# --- Recreating a document ------------------------------------------------------------------------------


class _NewIds:
    """The ids a recreated document's rows get, by their ids in the document."""

    def __init__(self, document: dict[str, Any], conversation_id: str):
        self.messages = {message["id"]: new_id("msg") for message in document["messages"]}
        self.stored: dict[str, str] = {}  # files' and frames'
        self.conversation_id = conversation_id
        self.conversation = {document["conversation"].get("id") or "": conversation_id}

    def message(self, old: str | None) -> str | None:
        return self.messages.get(old) if old else None

    def ref(self, old: str) -> str:
        """A field that holds a reference (an attachment, a citation's source): the copy's."""
        return self.stored.get(old) or self.in_text(old)

    def in_text(self, text: str) -> str:
        """Ids shaped as Parley makes them, wherever they occur (a reply that names a file, a stream event)."""
        return _ID_IN_TEXT.sub(
            lambda match: self.stored.get(match[0]) or self.messages.get(match[0]) or self.conversation.get(match[0])
            or match[0],
            text,
        )  # fmt: skip

    def in_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.in_text(value)
        if isinstance(value, list):
            return [self.in_json(item) for item in value]
        if isinstance(value, dict):
            return {key: self.in_json(item) for key, item in value.items()}
        return value


def conversation_import(*, agent: Agent, document: dict[str, Any], name: str | None = None) -> Conversation:
    """Recreate the document as a new conversation of `agent`, every row with a new id, all or nothing:
    the bytes stored before a failure are removed again. Its messages keep their times; the conversation's
    last activity is now. A reply that was running is stored `cancelled`.

    The files are read, their text extracted and their bytes stored before the transaction; it records
    them last, as it ends, since recording them locks the tenant's row (its storage limit) until then."""
    ids = _NewIds(document, new_id("conv"))
    tenant = agent.tenant
    prepared, stored = [], []
    try:
        for entry in document["files"]:
            with _file_content(entry) as upload:
                item = file_prepare(
                    tenant=tenant, conversation_id=ids.conversation_id, upload=upload, origin=entry["origin"],
                    message_id=ids.message(entry["message_id"]),
                )  # fmt: skip
                if entry.get("sha256") and item.row.sha256 != entry["sha256"]:
                    raise Invalid(
                        f"files: the bytes of {entry['id']!r} do not have its sha256.",
                        details={"file_ref": entry["id"]},
                    )
                stored += files_store([item])  # (one at a time: its upload is open only here)
            prepared.append(item)
            ids.stored[entry["id"]] = item.row.id
        with transaction.atomic():
            return _recreate(agent, document, name, ids, prepared, stored)
    except BaseException:
        stored_bytes_delete(stored)
        raise


def _recreate(
    agent: Agent, document: dict[str, Any], name: str | None, ids: _NewIds, prepared: list, stored: list[str]
) -> Conversation:
    given = document["conversation"]
    conversation = conversation_create(
        agent=agent,
        name=given["name"] if name is None else name,
        user_id=given["user_id"],
        metadata=given["metadata"],
        archived=given["archived"],
        pinned=given["pinned"],
        conversation_id=ids.conversation_id,
    )
    tenant_id = conversation.tenant_id
    frames_of: dict[str, str] = {}
    for entry in document["data_frames"]:
        with _frame_source(entry) as source:
            frame = dataframe_create_from_parquet(
                tenant_id=tenant_id, conversation_id=conversation.id, name=entry["name"], source=source
            )
        stored.append(frame.storage_key)
        ids.stored[entry["id"]] = frame.id
        if message_id := ids.message(entry["message_id"]):
            frames_of[frame.id] = message_id

    now = timezone.now()
    messages = [_message_row(entry, tenant_id, conversation, ids, now + timedelta(microseconds=number))
                for number, entry in enumerate(document["messages"])]  # fmt: skip
    Message.objects.bulk_create(messages)
    Citation.objects.bulk_create(
        Citation(tenant_id=tenant_id, message_id=ids.messages[entry["id"]], **{
            **citation, "source_id": ids.ref(citation["source_id"])
        })
        for entry in document["messages"] for citation in entry["citations"]
    )  # fmt: skip
    ToolCall.objects.bulk_create(
        ToolCall(
            tenant_id=tenant_id, message_id=ids.messages[entry["id"]], call_id=call["id"], position=position,
            name=call["name"], arguments=ids.in_json(call["arguments"]), status=call["status"],
            content=ids.in_json(call["content"]), content_type=call["content_type"],
        )
        for entry in document["messages"] for position, call in enumerate(entry["tool_calls"])
    )  # fmt: skip
    Feedback.objects.bulk_create(
        Feedback(tenant_id=tenant_id, message_id=ids.messages[entry["id"]], **{
            key: value for key, value in entry["feedback"].items() if key != "updated_at"
        })
        for entry in document["messages"] if entry["feedback"] is not None
    )  # fmt: skip
    for frame_id, message_id in frames_of.items():
        DataFrame.objects.filter(pk=frame_id).update(message_id=message_id)

    latest = max((row for row in messages if row.engine), key=lambda row: (row.created_at, row.id), default=None)
    conversation.current_message_id = ids.message(given["current_message_id"])
    conversation.title_source = given["title_source"] if name is None else conversation.title_source
    conversation.message_count = len(messages)
    conversation.last_engine, conversation.last_model = (latest.engine, latest.model) if latest else ("", "")
    conversation.save(
        update_fields=["current_message_id", "title_source", "message_count", "last_engine", "last_model"]
    )
    if prepared:  # last: it locks the tenant's row until the commit
        files_insert(tenant=agent.tenant, prepared=prepared)
    return conversation


def _message_row(
    entry: dict[str, Any], tenant_id: str, conversation: Conversation, ids: _NewIds, default_time
) -> Message:
    running = entry["status"] == MessageStatus.IN_PROGRESS
    return Message(
        id=ids.messages[entry["id"]],
        tenant_id=tenant_id,
        conversation=conversation,
        parent_id=ids.message(entry["parent_id"]),
        role=entry["role"],
        content=ids.in_text(entry["content"]),
        thinking=ids.in_text(entry["thinking"]),
        status=MessageStatus.CANCELLED if running else entry["status"],
        error=entry["error"],
        input_tokens=entry["input_tokens"],
        output_tokens=entry["output_tokens"],
        attachments=[ids.ref(ref) for ref in entry["attachments"]],
        metadata=entry["metadata"],
        engine=entry["engine"],
        model=entry["model"],
        finish_reason=entry["finish_reason"],
        created_at=entry.get("created_at") or default_time,
        completed_at=entry.get("completed_at") or (default_time if running else None),
        stream_index=entry.get("stream_index", []),
        extra_events=ids.in_json(entry.get("extra_events", [])),
    )


def _missing(entry: dict[str, Any]) -> Conflict:
    return Conflict(
        f"The stored bytes of {entry['name']!r} ({entry['id']}) are missing: it cannot be copied.",
        details={"id": entry["id"]},
    )


@contextmanager
def _file_content(entry: dict[str, Any]) -> Iterator[DjangoFile]:
    if entry.get("content") is not None:
        yield ContentFile(entry["content"], name=entry["name"])
        return
    try:
        stored = default_storage.open(entry["storage_key"], "rb")
    except FileNotFoundError:
        raise _missing(entry) from None
    with stored:
        yield DjangoFile(stored, name=entry["name"])


@contextmanager
def _frame_source(entry: dict[str, Any]) -> Iterator[Any]:
    if entry.get("content") is not None:
        yield io.BytesIO(entry["content"])
        return
    try:
        with stored_parquet(entry["storage_key"]) as source:
            yield source
    except FileNotFoundError:
        raise _missing(entry) from None


def conversation_fork(
    *, conversation: Conversation, tip: Message, agent: Agent, name: str | None = None
) -> Conversation:
    """A new conversation of `agent` (the same tenant's) with the branch from the root to `tip`: its
    messages with their citations and tool calls (not their feedback, which rated the original replies),
    and copies of the files and data frames of that branch and of those no message produced."""
    if tip.status == MessageStatus.IN_PROGRESS:
        raise Conflict(
            "This reply is being generated: fork from it once it has finished.", details={"message_id": tip.id}
        )
    document = conversation_document(conversation=conversation, tip_id=tip.id, feedback=False)
    document["conversation"].update(archived=False, pinned=False)  # (a new conversation, listed as one)
    return conversation_import(agent=agent, document=document, name=name)
