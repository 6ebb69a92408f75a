"""Writes that cross a turn's parts: deleting conversations (their running replies stopped, their files'
and data frames' stored bytes removed after the commit) and failing replies whose process died."""

from __future__ import annotations

import logging
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.models import Agent
from conversations.models import Conversation, Message, MessageStatus
from dataframes.services import dataframes_delete_stored
from files.services import file_bytes_delete_for_conversations
from turns.events import StreamRecord, is_terminal
from turns.log import stream_log

logger = logging.getLogger(__name__)

INTERRUPTED = "The generation was interrupted: its server process stopped."
SWEPT_SEQ_SKIP = 100_000  # more events than a generation streams between two flushes (one second)


@transaction.atomic
def conversation_delete_many(*, tenant_id: str, conversations: QuerySet[Conversation]) -> int:
    """Delete conversations with everything they own, running generations stopped first; returns how
    many were deleted."""
    ids = list(conversations.filter(tenant_id=tenant_id).values_list("id", flat=True))
    if not ids:
        return 0
    running = list(
        Message.objects.filter(
            tenant_id=tenant_id, conversation_id__in=ids, status=MessageStatus.IN_PROGRESS
        ).values_list("id", flat=True)
    )
    # Wherever a generation runs, it sees the request within half a second and stops; its final write
    # then finds no message and does nothing. Only once the delete is committed.
    transaction.on_commit(lambda: _cancel_all(running))
    # Stored bytes go after the commit; the rows go with the conversations (cascade).
    file_bytes_delete_for_conversations(tenant_id=tenant_id, conversation_ids=ids)
    dataframes_delete_stored(tenant_id=tenant_id, conversation_ids=ids)
    Conversation.objects.filter(tenant_id=tenant_id, id__in=ids).delete()
    return len(ids)


def _cancel_all(message_ids: list[str]) -> None:
    for message_id in message_ids:
        async_to_sync(stream_log().request_cancel)(message_id)


def conversation_delete_by_ids(*, tenant_id: str, ids: list[str]) -> tuple[int, list[str]]:
    """Delete the tenant's conversations among `ids`; returns the count and the ids not found."""
    found = set(Conversation.objects.filter(tenant_id=tenant_id, id__in=ids).values_list("id", flat=True))
    deleted = conversation_delete_many(tenant_id=tenant_id, conversations=Conversation.objects.filter(id__in=found))
    return deleted, [conversation_id for conversation_id in ids if conversation_id not in found]


def conversation_delete_all(*, tenant_id: str) -> int:
    return conversation_delete_many(tenant_id=tenant_id, conversations=Conversation.objects.all())


def conversation_delete(*, conversation: Conversation) -> None:
    conversation_delete_many(
        tenant_id=conversation.tenant_id, conversations=Conversation.objects.filter(id=conversation.id)
    )


@transaction.atomic
def agent_delete(*, agent: Agent) -> None:
    """Delete the agent with every conversation it owns (and what they own)."""
    conversation_delete_many(tenant_id=agent.tenant_id, conversations=agent.conversations.all())
    agent.delete()


def message_sweep_stale() -> int:
    """Fail every in-progress message whose generation stopped sending heartbeats."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.GENERATION_STALE_SECONDS)
    stale = Message.objects.filter(status=MessageStatus.IN_PROGRESS).filter(
        Q(heartbeat_at__lte=cutoff) | Q(heartbeat_at__isnull=True, created_at__lte=cutoff)
    )
    return sum(message_sweep_if_stale(message, now=now) for message in stale)


def message_sweep_if_stale(message: Message, *, now=None) -> bool:
    """Mark a running message failed when its generation stopped sending heartbeats; True if it did.

    Its stored text is what was streamed: the live log's (in Redis, it outlives the process) when it holds
    this run's events, which may be ahead of the last flush; the error event follows them, there and in the
    stored stream, so a follower ends at once and a client resuming from any id it saw gets the rest."""
    now = now or timezone.now()
    last_sign = message.heartbeat_at or message.created_at
    if last_sign > now - timedelta(seconds=settings.GENERATION_STALE_SECONDS):
        return False
    record = live = _streamed(message)
    if live is not None:
        error_seq = record.add({"error": INTERRUPTED})
    else:
        record = StreamRecord(
            content=message.content, thinking=message.thinking, index=message.stream_index, extra=message.extra_events
        )
        # The stored record trails what the dead generation had streamed by its last unflushed events, so
        # the error skips ahead: a client resuming from any id it saw live still gets it.
        error_seq = record.add({"error": INTERRUPTED}, seq=record.next_seq + SWEPT_SEQ_SKIP)
    # Only if no heartbeat came since it was read: a generation that just showed a sign of life stays.
    updated = Message.objects.filter(
        pk=message.pk, status=MessageStatus.IN_PROGRESS, heartbeat_at=message.heartbeat_at
    ).update(
        status=MessageStatus.FAILED,
        error=INTERRUPTED,
        completed_at=now,
        heartbeat_at=None,
        content=record.content,
        thinking=record.thinking,
        stream_index=record.index,
        extra_events=record.extra,
    )
    if updated and live is not None:  # (a log holding only the error would hide the stored text from joiners)
        try:
            async_to_sync(stream_log().append)(message.id, error_seq, {"error": INTERRUPTED})
        except Exception:  # followers still learn it from the stored message, within seconds
            logger.warning("Publishing the end of swept reply %s failed", message.id, exc_info=True)
    return bool(updated)


def _streamed(message: Message) -> StreamRecord | None:
    """The message's stream as its live log holds it, if that is this run's and not behind what is stored."""
    try:
        entries = async_to_sync(stream_log().entries)(message.id)
    except Exception:  # Redis unreachable: the stored text is all there is
        logger.warning("Reading the live log of swept reply %s failed", message.id, exc_info=True)
        return None
    if not entries or any(is_terminal(event) for _, event in entries):
        return None  # none, or a finished run's (a `continue` that died before its log was reset)
    record = StreamRecord()
    for seq, event in entries:
        record.add(event, seq=seq)
    if not (record.content.startswith(message.content) and record.thinking.startswith(message.thinking)):
        return None
    return record
