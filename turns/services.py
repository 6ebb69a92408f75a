"""Writes that cross a turn's parts: deleting conversations (their running replies stopped, their files'
and data frames' stored bytes removed after the commit), and settling replies whose process died: claimed
to be continued by this process, or failed, with the text they streamed."""

from __future__ import annotations

import copy
import itertools
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.models import Agent
from conversations.models import Conversation, Message, MessageStatus
from conversations.services import message_end_webhook, streamed_rows_store
from core.notify import conversation_notify
from core.tenancy import owner_scope
from dataframes.services import dataframes_delete_stored
from files.services import file_bytes_delete_for_conversations
from tenants.models import Tenant, WebhookEvent
from tenants.webhooks import webhook_events_record
from turns.events import StreamRecord, StreamSnapshot, is_terminal
from turns.log import stream_log

logger = logging.getLogger(__name__)

INTERRUPTED = "The generation was interrupted: its server process stopped."
ON_CRASH_DEFAULT = "continue"  # an agent's `on_crash`: a reply whose process died is continued, or "fail"
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
    webhook_events_record(
        tenant_id=tenant_id,
        event_type=WebhookEvent.CONVERSATION_DELETED,
        data=lambda: [
            {"conversation": deleted}
            for deleted in Conversation.objects.filter(tenant_id=tenant_id, id__in=ids)
            .order_by("id")
            .values("id", "agent_id", "name", "user_id", "metadata", "created_at", "updated_at")
        ],
    )
    Conversation.objects.filter(tenant_id=tenant_id, id__in=ids).delete()
    for conversation_id in ids:
        conversation_notify(conversation_id, "conversation.deleted")
    return len(ids)


RETENTION_BATCH = 100  # conversations deleted per transaction: short ones, which never hold a table long


@owner_scope()  # every tenant's conversations
def conversations_purge_expired(*, now: datetime | None = None, batches_max: int | None = None) -> int:
    """Delete the conversations idle longer than their retention (their agent's `retention_days`, else their
    tenant's), with their files, frames and bytes, RETENTION_BATCH per transaction; at most `batches_max`
    batches (None: until none is left). Returns how many were deleted. Several processes may run it at once:
    a conversation is deleted once."""
    now = now or timezone.now()
    scopes = [
        (agent.tenant_id, [agent.id], agent.retention_days)
        for agent in Agent.objects.filter(retention_days__isnull=False).only("id", "tenant_id", "retention_days")
    ] + [
        (tenant.id, _agents_without_retention(tenant.id), tenant.retention_days)
        for tenant in Tenant.objects.filter(retention_days__isnull=False).only("id", "retention_days")
    ]
    deleted = batches = 0
    for tenant_id, agent_ids, days in scopes:
        cutoff = now - timedelta(days=days)
        # A range of the agents' list index (tenant, agent, archived, pinned, updated_at) per combination.
        for archived, pinned in itertools.product((False, True), repeat=2):
            expired = Conversation.objects.filter(
                tenant_id=tenant_id, agent_id__in=agent_ids, archived=archived, pinned=pinned, updated_at__lt=cutoff
            )
            while batches_max is None or batches < batches_max:
                ids = list(expired.order_by("updated_at").values_list("id", flat=True)[:RETENTION_BATCH])
                if not ids:
                    break
                # Checked again, locked, in the deleting transaction: one that a turn made active meanwhile
                # (or that another process is deleting) is left alone.
                still_expired = expired.filter(id__in=ids).select_for_update(skip_locked=True)
                deleted += conversation_delete_many(tenant_id=tenant_id, conversations=still_expired)
                batches += 1
    return deleted


def _agents_without_retention(tenant_id: str) -> list[str]:
    return list(Agent.objects.filter(tenant_id=tenant_id, retention_days__isnull=True).values_list("id", flat=True))


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


@dataclass(frozen=True)
class Claim:
    """A dead process's reply that this process now owns, to be continued: the message as claimed (its
    text what was streamed, its run this one's) and its stream so far; the rest follows from `first_seq`."""

    message: Message
    stream: StreamSnapshot
    since: float  # time.time() of the dead run's last sign of life: a cancel requested since is for it
    live: bool  # the stream is its live log's (which goes on); else the stored one's (the log starts again)


@owner_scope()  # every tenant's replies
def message_sweep_stale(*, alive_since: datetime | None = None, fail: bool = False) -> tuple[int, list[Claim]]:
    """Settle the running replies whose generation stopped sending heartbeats (and, with `alive_since`,
    those without a sign of life since then: one process without Redis, at its start, knows that no
    earlier reply runs): each is claimed to be continued, or failed where its agent says
    `on_crash: "fail"` (every one with `fail`). A reply that cannot be claimed is failed. Returns how many
    were failed and the claims, which the caller continues (turns.runtime.stale_replies_take_over)."""
    now = timezone.now()
    cutoff = _cutoff(now, alive_since)
    running = (
        Message.objects.filter(status=MessageStatus.IN_PROGRESS)
        .filter(Q(heartbeat_at__lte=cutoff) | Q(heartbeat_at__isnull=True, created_at__lte=cutoff))
        .select_related("conversation__agent")
    )
    failed, claims = 0, []
    for message in running:
        try:
            if fail or on_crash(message) == "fail":
                failed += message_sweep_if_stale(message, now=now, alive_since=alive_since)
            elif (claim := message_claim_if_stale(message, now=now, alive_since=alive_since)) is not None:
                claims.append(claim)
        except DatabaseError:  # (its streamed text refused): failed with its stored text, the others go on
            logger.exception("Settling reply %s failed; failing it with its stored text", message.id)
            try:
                failed += message_sweep_if_stale(message, now=now, alive_since=alive_since, from_log=False)
            except DatabaseError:
                logger.exception("Failing reply %s failed", message.id)
    return failed, claims


def on_crash(message: Message) -> str:
    """What becomes of the reply if its process dies: "continue" or "fail" (its agent's option)."""
    return message.conversation.agent.options.get("on_crash", ON_CRASH_DEFAULT)


def _cutoff(now: datetime, alive_since: datetime | None) -> datetime:
    """A reply whose last sign of life is this old or older belongs to no running process."""
    cutoff = now - timedelta(seconds=settings.GENERATION_STALE_SECONDS)
    return max(cutoff, alive_since) if alive_since is not None else cutoff


def _is_stale(message: Message, now: datetime, alive_since: datetime | None) -> bool:
    return (message.heartbeat_at or message.created_at) <= _cutoff(now, alive_since)


def _settle_filter(message: Message) -> QuerySet[Message]:
    # Only if no heartbeat came since it was read: a generation that just showed a sign of life stays.
    return Message.objects.filter(pk=message.pk, status=MessageStatus.IN_PROGRESS, heartbeat_at=message.heartbeat_at)


def message_claim_if_stale(message: Message, *, now=None, alive_since: datetime | None = None) -> Claim | None:
    """Take a running message whose generation stopped sending heartbeats over: it gets a new run and a
    heartbeat, its stored text becomes what was streamed (see message_sweep_if_stale), and the claim says
    where the rest goes on. None when it is not stale, or another process claimed or settled it first."""
    now = now or timezone.now()
    if not _is_stale(message, now, alive_since):
        return None
    live = _streamed(message)
    stream = live or _stored(message)
    # The rest is numbered past any id a client may have seen live: the unflushed events of a dead run
    # (without a live log), or the late ones of a run that only looked dead (see ProgressWriter).
    stream.first_seq = stream.next_seq + SWEPT_SEQ_SKIP
    run_id = new_run_id()
    claimed = _settle_filter(message).update(heartbeat_at=now, run_id=run_id, **_stream_fields(stream))
    if not claimed:
        return None
    since = (message.heartbeat_at or message.created_at).timestamp()
    message = copy.copy(message)
    message.heartbeat_at, message.run_id = now, run_id
    message.content, message.thinking = stream.content, stream.thinking
    message.stream_index, message.extra_events = stream.index, stream.extra
    return Claim(message, stream.snapshot(), since, live=live is not None)


def new_run_id() -> str:
    return secrets.token_hex(8)


def message_sweep_if_stale(
    message: Message, *, now=None, alive_since: datetime | None = None, from_log: bool = True
) -> bool:
    """Mark a running message failed when its generation stopped sending heartbeats; True if it did.

    Its stored text is what was streamed: the live log's (in Redis, it outlives the process) when it holds
    this run's events, which may be ahead of the last flush; the error event follows them, there and in the
    stored stream, so a follower ends at once and a client resuming from any id it saw gets the rest."""
    now = now or timezone.now()
    if not _is_stale(message, now, alive_since):
        return False
    record = live = _streamed(message) if from_log else None
    if live is not None:
        error_seq = record.add({"error": INTERRUPTED})
    else:
        record = _stored(message)
        # The stored record trails what the dead generation had streamed by its last unflushed events, so
        # the error skips ahead: a client resuming from any id it saw live still gets it.
        error_seq = record.add({"error": INTERRUPTED}, seq=record.next_seq + SWEPT_SEQ_SKIP)
    with transaction.atomic():
        updated = _settle_filter(message).update(
            status=MessageStatus.FAILED,
            error=INTERRUPTED,
            completed_at=now,
            heartbeat_at=None,
            **_stream_fields(record),
        )
        if updated:  # its citations and tool calls, as a reply that ends stores them
            streamed_rows_store(tenant_id=message.tenant_id, message_id=message.id, extra=record.extra)
            message_end_webhook(
                tenant_id=message.tenant_id,
                message_id=message.id,
                status=MessageStatus.FAILED,
                also=message.webhook_endpoint_id,
            )
    if updated and live is not None:  # (a log holding only the error would hide the stored text from joiners)
        try:
            async_to_sync(stream_log().append)(message.id, error_seq, {"error": INTERRUPTED})
        except Exception:  # followers still learn it from the stored message, within seconds
            logger.warning("Publishing the end of swept reply %s failed", message.id, exc_info=True)
    if updated:
        conversation_notify(
            message.conversation_id, "message.completed", message_id=message.id, status=MessageStatus.FAILED
        )
    return bool(updated)


def _stored(message: Message) -> StreamRecord:
    return StreamRecord(
        content=message.content, thinking=message.thinking, index=message.stream_index, extra=message.extra_events
    )


def _stream_fields(record: StreamRecord) -> dict:
    return {
        "content": record.content,
        "thinking": record.thinking,
        "stream_index": record.index,
        "extra_events": record.extra,
    }


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
