from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.models import Agent
from conversations.models import Citation, Conversation, Feedback, Message, MessageStatus, Role, TitleSource, ToolCall
from conversations.selectors import message_subtree_ids
from conversations.serializers import MessageSerializer
from core.errors import Conflict, Invalid, NotFound
from core.notify import conversation_notify
from tenants.webhooks import webhook_event_record


def conversation_create(
    *,
    agent: Agent,
    name: str = "",
    user_id: str = "",
    metadata: dict[str, Any] | None = None,
    archived: bool = False,
    pinned: bool = False,
    conversation_id: str | None = None,
) -> Conversation:
    """Without a name the conversation gets a proposed title after its first reply. `conversation_id`: an
    id chosen beforehand (new_id("conv")), for a caller that stores its files' bytes before it exists."""
    now = timezone.now()
    return Conversation.objects.create(
        **({"id": conversation_id} if conversation_id else {}),
        tenant_id=agent.tenant_id,
        agent=agent,
        name=name,
        user_id=user_id,
        archived=archived,
        pinned=pinned,
        title_source=TitleSource.USER if name else TitleSource.PROPOSED,
        metadata=metadata or {},
        created_at=now,
        updated_at=now,
    )


def conversation_update(*, conversation: Conversation, data: dict[str, Any]) -> Conversation:
    """Rename it or replace its metadata; 404 when it was deleted since it was read."""
    # Activity is what people say: a pin or an archive changes neither the order nor the retention clock.
    changes: dict[str, Any] = {"updated_at": timezone.now()} if {"name", "user_id", "metadata"} & set(data) else {}
    if "name" in data:
        changes.update(name=data["name"], title_source=TitleSource.USER)
    for field in ("user_id", "metadata", "archived", "pinned"):
        if field in data:
            changes[field] = data[field]
    # An UPDATE that finds no row (deleted meanwhile, by another request) is a 404; save() raised a 500.
    row = Conversation.objects.filter(pk=conversation.pk)
    if not (row.update(**changes) if changes else row.exists()):
        raise NotFound("Conversation not found.")
    for name, value in changes.items():
        setattr(conversation, name, value)
    conversation_notify(
        conversation.id,
        "conversation.updated",
        **{key: data[key] for key in ("name", "user_id", "metadata", "archived", "pinned") if key in data},
    )
    return conversation


def feedback_submit(*, message: Message, thumbs_up: bool, category: str = "", comment: str = "") -> Feedback:
    """Create or replace the message's feedback."""
    if message.role != Role.ASSISTANT:
        raise Invalid("Feedback is for assistant messages.", details={"message_id": message.id})
    feedback, _ = Feedback.objects.update_or_create(
        message=message,
        defaults={"tenant_id": message.tenant_id, "thumbs_up": thumbs_up, "category": category, "comment": comment},
    )
    return feedback


def streamed_rows_store(
    *, tenant_id: str, message_id: str, extra: list[dict[str, Any]]
) -> tuple[list[Citation], list[ToolCall]]:
    """Store a reply's streamed citations and tool calls (its `extra` events) as rows, those already stored
    kept (a reply taken over stored some before its first run died); returns the rows of the events.

    The citations by number (the first of each number), each with the tool call whose result it came from:
    the last one started before it (an LLM's tools show their citations before their result, the builtin
    engine after its text); the tool calls in the order made, each with its result if it came."""
    citations: dict[int, Citation] = {}
    calls: dict[str, ToolCall] = {}
    last_call = ""
    for event in extra:
        if call := event.get("tool_call"):
            last_call = call["id"]
            calls.setdefault(call["id"], ToolCall(
                tenant_id=tenant_id, message_id=message_id, call_id=call["id"], position=len(calls),
                name=call["name"], arguments=call["arguments"],
            ))  # fmt: skip
        elif (result := event.get("tool_result")) and (row := calls.get(result["id"])) is not None:
            row.status, row.content, row.content_type = result["status"], result["content"], result["content_type"]
        for item in event.get("citations", ()):
            if item["number"] not in citations:
                citations[item["number"]] = _citation(tenant_id, message_id, item, tool_call_id=last_call)
    cited = [citations[number] for number in sorted(citations)]
    if cited:
        Citation.objects.bulk_create(cited, ignore_conflicts=True)
    if calls:
        ToolCall.objects.bulk_create(list(calls.values()), ignore_conflicts=True)
    return cited, list(calls.values())


def message_end_webhook(*, tenant_id: str, message_id: str, status: str, also: str = "") -> None:
    """Record `message.completed`, `message.failed` or `message.cancelled` for the tenant's webhooks, in the
    transaction that stored the reply's end: the reply as the API shows it, with its conversation's ids;
    `also`: the endpoint its background post named (`webhook_url`), whatever events it subscribed to."""

    def data() -> dict[str, Any]:
        message = Message.objects.for_display().select_related("conversation").get(pk=message_id)
        return {"message": MessageSerializer(message).data, "agent_id": message.conversation.agent_id}

    webhook_event_record(tenant_id=tenant_id, event_type=f"message.{status}", data=data, also=also)


def _citation(tenant_id: str, message_id: str, item: dict[str, Any], *, tool_call_id: str) -> Citation:
    return Citation(
        tenant_id=tenant_id,
        message_id=message_id,
        number=item["number"],
        source_id=item.get("source_id", ""),
        source_name=(item.get("source_name") or "")[:255],
        url=item.get("url") or "",
        page=item.get("page"),
        snippet=item.get("snippet") or "",
        relevance_score=item.get("relevance_score") or 0,
        quality_score=item.get("quality_score") or 0,
        tool_call_id=tool_call_id,
    )


# --- Editing the history ------------------------------------------------------------------------------

MESSAGES_APPEND_MAX = 100


def _locked(conversation: Conversation) -> Conversation:
    """The conversation's row, locked: tree edits and turns (turns.runtime.turn_start) take it one at a time."""
    locked = Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
    if locked is None:
        raise NotFound("Conversation not found.")
    return locked


def _reply_running(conversation: Conversation, ids=None) -> str | None:
    running = Message.objects.filter(
        tenant_id=conversation.tenant_id, conversation=conversation, status=MessageStatus.IN_PROGRESS
    )
    if ids is not None:
        running = running.filter(id__in=ids)
    return running.values_list("id", flat=True).first()


@transaction.atomic
def message_subtree_delete(*, conversation: Conversation, message: Message) -> tuple[int, str | None]:
    """Delete the message with every message under it (their citations, tool calls and feedback; files they
    produced stay the conversation's). The current message, if it was among them, becomes the message's
    parent. Returns how many were deleted and the current message's id. Conflict while a reply among them
    runs (cancel it first)."""
    conversation = _locked(conversation)
    subtree = list(
        Message.objects.filter(tenant_id=conversation.tenant_id, id__in=message_subtree_ids(message)).values_list(
            "id", flat=True
        )
    )
    if not subtree:  # deleted meanwhile (by another request)
        raise NotFound("Message not found.")
    if running := _reply_running(conversation, subtree):
        raise Conflict(
            "A reply under this message is being generated: cancel it first.", details={"message_id": running}
        )
    changes: dict[str, Any] = {"updated_at": timezone.now(), "message_count": F("message_count") - len(subtree)}
    if conversation.current_message_id in subtree:
        changes["current_message_id"] = message.parent_id
    Conversation.objects.filter(pk=conversation.pk).update(**changes)
    Message.objects.filter(tenant_id=conversation.tenant_id, id__in=subtree).delete()
    current = changes.get("current_message_id", conversation.current_message_id)
    conversation_notify(conversation.id, "conversation.updated", current_message_id=current)
    return len(subtree), current


@transaction.atomic
def message_content_replace(*, conversation: Conversation, message: Message, content: str) -> Message:
    """Edit a user message that has no reply yet, in place."""
    conversation = _locked(conversation)
    if message.role != Role.USER:
        raise Invalid("in_place: only a user message is edited.", details={"message_id": message.id})
    if Message.objects.filter(tenant_id=conversation.tenant_id, parent_id=message.id).exists():
        raise Invalid(
            "in_place: this message has a reply; edit it without in_place (a new branch).",
            details={"message_id": message.id},
        )
    if not Message.objects.filter(pk=message.pk).update(content=content):  # deleted meanwhile
        raise NotFound("Message not found.")
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    conversation_notify(conversation.id, "conversation.updated", message_id=message.id)
    message.content = content
    return message


@transaction.atomic
def messages_append(
    *, conversation: Conversation, messages: list[dict[str, Any]], parent_id: str | None = None
) -> list[Message]:
    """Add messages as they are, without running the agent: a chain after `parent_id` (default: the current
    message), the last becoming the current one. Conflict while a reply runs."""
    conversation = _locked(conversation)
    if running := _reply_running(conversation):
        raise Conflict("A reply is being generated in this conversation.", details={"message_id": running})
    parent = parent_id if parent_id is not None else conversation.current_message_id
    if parent_id == "root":
        parent = None
    elif (
        parent is not None
        and not Message.objects.filter(tenant_id=conversation.tenant_id, conversation=conversation, id=parent).exists()
    ):
        raise Invalid(f"parent_id: no message {parent!r} in this conversation.", details={"parent_id": parent})
    now = timezone.now()
    rows = []
    for number, given in enumerate(messages):
        row = Message(
            tenant_id=conversation.tenant_id,
            conversation=conversation,
            parent_id=parent,
            role=given["role"],
            content=given["content"],
            metadata=given.get("metadata", {}),
            status=MessageStatus.COMPLETED,
            finish_reason="stop" if given["role"] == Role.ASSISTANT else "",
            created_at=now + timedelta(microseconds=number),  # (their order, as given)
            completed_at=now,
        )
        rows.append(row)
        parent = row.id
    Message.objects.bulk_create(rows)
    Conversation.objects.filter(pk=conversation.pk).update(
        current_message_id=rows[-1].id, message_count=F("message_count") + len(rows), updated_at=now
    )
    conversation_notify(conversation.id, "conversation.updated", current_message_id=rows[-1].id)
    return rows
