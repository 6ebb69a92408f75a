from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import Agent
from conversations.models import Conversation, TitleSource
from files.services import file_bytes_delete_for_conversations


def conversation_create(*, agent: Agent, name: str, metadata: dict[str, Any] | None = None) -> Conversation:
    now = timezone.now()
    return Conversation.objects.create(
        tenant_id=agent.tenant_id,
        agent=agent,
        name=name,
        title_source=TitleSource.USER,
        metadata=metadata or {},
        created_at=now,
        updated_at=now,
    )


def conversation_update(*, conversation: Conversation, data: dict[str, Any]) -> Conversation:
    fields = ["updated_at"]
    if "name" in data:
        conversation.name = data["name"]
        conversation.title_source = TitleSource.USER
        fields += ["name", "title_source"]
    if "metadata" in data:
        conversation.metadata = data["metadata"]
        fields.append("metadata")
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=fields)
    return conversation


@transaction.atomic
def conversation_delete_many(*, tenant_id: str, conversations: QuerySet[Conversation]) -> int:
    """Delete conversations with everything they own; returns how many were deleted."""
    ids = list(conversations.filter(tenant_id=tenant_id).values_list("id", flat=True))
    if not ids:
        return 0
    file_bytes_delete_for_conversations(tenant_id=tenant_id, conversation_ids=ids)
    Conversation.objects.filter(tenant_id=tenant_id, id__in=ids).delete()
    return len(ids)


def conversation_delete(*, conversation: Conversation) -> None:
    conversation_delete_many(
        tenant_id=conversation.tenant_id, conversations=Conversation.objects.filter(id=conversation.id)
    )
