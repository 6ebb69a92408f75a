from __future__ import annotations

from typing import Any

from django.utils import timezone

from agents.models import Agent
from conversations.models import Citation, Conversation, Feedback, Message, Role, TitleSource, ToolCall
from core.errors import Invalid, NotFound
from core.notify import conversation_notify


def conversation_create(
    *,
    agent: Agent,
    name: str = "",
    user_id: str = "",
    metadata: dict[str, Any] | None = None,
    archived: bool = False,
    pinned: bool = False,
) -> Conversation:
    """Without a name the conversation gets a proposed title after its first reply."""
    now = timezone.now()
    return Conversation.objects.create(
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
    changes: dict[str, Any] = {"updated_at": timezone.now()}
    if "name" in data:
        changes.update(name=data["name"], title_source=TitleSource.USER)
    for field in ("user_id", "metadata", "archived", "pinned"):
        if field in data:
            changes[field] = data[field]
    # An UPDATE that finds no row (deleted meanwhile, by another request) is a 404; save() raised a 500.
    if not Conversation.objects.filter(pk=conversation.pk).update(**changes):
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
