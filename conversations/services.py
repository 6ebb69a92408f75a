from __future__ import annotations

from typing import Any

from django.utils import timezone

from agents.models import Agent
from conversations.models import Conversation, Feedback, Message, Role, TitleSource
from core.errors import Invalid, NotFound
from core.notify import conversation_notify


def conversation_create(*, agent: Agent, name: str = "", metadata: dict[str, Any] | None = None) -> Conversation:
    """Without a name the conversation gets a proposed title after its first reply."""
    now = timezone.now()
    return Conversation.objects.create(
        tenant_id=agent.tenant_id,
        agent=agent,
        name=name,
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
    if "metadata" in data:
        changes["metadata"] = data["metadata"]
    # An UPDATE that finds no row (deleted meanwhile, by another request) is a 404; save() raised a 500.
    if not Conversation.objects.filter(pk=conversation.pk).update(**changes):
        raise NotFound("Conversation not found.")
    for name, value in changes.items():
        setattr(conversation, name, value)
    conversation_notify(
        conversation.id, "conversation.updated", **{key: data[key] for key in ("name", "metadata") if key in data}
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
