"""One turn of an agent (DESIGN.md section 5), in Zulip's check / do / notify shape.

`turn_start` checks the request against the conversation (locked) and, in one transaction, writes the
turn's rows in one of four modes (a new message, a branch, a regenerated reply, a continued one); it
returns the turn's immutable plan. `generation_start` then drives the engine in an asyncio task of its own,
so the reply does not depend on the HTTP connection: it publishes every event to the message's stream
log, its progress is stored by the process's writer (turns.progress), and its end is stored with the
citations and the tenant's usage before the end is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import Error as DatabaseErrors  # DatabaseError, and InterfaceError for a closed connection
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agents.engines import ChatMessage, EngineFailure, Finished, ToolCallEnded, ToolCallStarted, TurnContext, Usage
from agents.engines.base import estimate_tokens
from agents.engines.selection import engine_for
from agents.models import Agent
from agents.titles import title_from_keywords, title_propose, title_without_model
from conversations.models import (
    Citation,
    Conversation,
    Message,
    MessageStatus,
    QueuedTurn,
    QueuedTurnStatus,
    Role,
    TitleSource,
    ToolCall,
)
from conversations.selectors import message_branch
from conversations.services import message_end_webhook, streamed_rows_store
from core.db import in_worker
from core.drain import handed_over
from core.errors import Conflict, Invalid, NotFound
from core.notify import conversation_anotify
from core.tenancy import owner_scope, scoped_context, tenant_scope
from files.selectors import conversation_has_indexed_files, file_refs_validate
from tenants.services import usage_record
from tenants.webhooks import webhook_endpoint_for_url
from turns.events import (
    END_KINDS,
    NUL_REPLACED,
    StreamRecord,
    StreamSnapshot,
    is_terminal,
    rebuild_events,
    storable,
    wire_event,
)
from turns.follow import message_events
from turns.log import stream_log
from turns.progress import progress_writer
from turns.services import INTERRUPTED, Claim, message_sweep_if_stale, message_sweep_stale, new_run_id, on_crash

logger = logging.getLogger(__name__)

ROOT = "root"  # `parent_id: "root"` starts a new branch at the top of the conversation
FINISH_ATTEMPTS = 3
CANCEL_POLL_SECONDS = 0.5  # a cancel stops a generation well within the 2 s it may take
RUNNING = "A reply is already being generated in this conversation."
QUEUED = "Messages are queued in this conversation: post with if_busy enqueue (or interrupt)."
QUEUE_MAX = 100  # turns waiting in one conversation
RUNNING_CONSTRAINT = "one_generation_per_conversation"
TURN_ATTEMPTS = 3


@dataclass(frozen=True)
class TurnRequest:
    content: str = ""
    attachments: list[str] = field(default_factory=list)
    parent_id: str | None = None
    regenerate: str | None = None
    continue_: bool = False
    reasoning: bool = False
    on_disconnect: str = "continue"  # or "cancel"
    metadata: dict[str, Any] = field(default_factory=dict)  # the user message's
    if_busy: str | None = None  # reject | enqueue | interrupt; None: the agent's `options.if_busy`, else reject
    webhook_url: str = ""  # a background post's: one of the tenant's endpoints, which gets the reply's end
    from_queue: bool = False  # started by queued_turn_start_next (else refused while turns are queued)

    @classmethod
    def of_queued(cls, stored: dict[str, Any]) -> TurnRequest:
        """A queued turn's request (QueuedTurn.request); a key of another version of Parley is ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in stored.items() if key in known}, from_queue=True)

    def queued(self) -> dict[str, Any]:
        """What a queued turn stores of it (QueuedTurn.request): the turn, not how the request waits."""
        return {
            "content": self.content, "attachments": self.attachments, "parent_id": self.parent_id,
            "regenerate": self.regenerate, "continue_": self.continue_, "reasoning": self.reasoning,
            "metadata": self.metadata, "webhook_url": self.webhook_url,
        }  # fmt: skip


@dataclass(frozen=True)
class ConversationRef:
    """The conversation a turn is for, as the request names it: turn_start reads it once, locked, and a
    conversation of another tenant or agent is not found."""

    tenant_id: str
    agent_id: str
    conversation_id: str

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationRef:
        return cls(conversation.tenant_id, conversation.agent_id, conversation.pk)


@dataclass(frozen=True)
class TurnPlan:
    """A committed turn: what its generation is to do."""

    tenant_id: str
    conversation_id: str
    user_message_id: str
    message_id: str  # the assistant message
    run_id: str  # this run of it: its writes change the message only while the run owns it
    agent: Agent
    context: TurnContext
    stream: StreamSnapshot  # the stream so far: its first event, or a continued reply's events
    base_tokens: tuple[int, int]  # a continued reply's tokens before this run
    started_at: float  # time.time() before the turn was committed: older cancel requests are not for it
    title_from: str  # the first question, when the conversation still waits for a proposed title
    rows: TurnRows | None  # None for a continued reply (its feedback and earlier citations are stored)
    webhook_endpoint_id: str = ""  # the endpoint the reply's end goes to besides the subscribed ones


@dataclass(frozen=True)
class TurnRows:
    """The rows a turn wrote when it started: with its Ending, they are the turn's answer as stored, without
    reading them back. They are never changed; `at_end` makes copies."""

    conversation: Conversation
    user_message: Message
    assistant: Message

    def at_end(self, ending: Ending) -> TurnRows:
        """The rows as the end stored them (someone else's change meanwhile, such as a rename, shows on
        the next read)."""
        outcome, conversation, assistant = ending.outcome, copy.copy(self.conversation), copy.copy(self.assistant)
        assistant.content, assistant.thinking = ending.stream.content, ending.stream.thinking
        assistant.status, assistant.error, assistant.finish_reason = (
            outcome.status,
            outcome.error,
            outcome.finish_reason,
        )
        assistant.input_tokens, assistant.output_tokens = outcome.input_tokens, outcome.output_tokens
        assistant.completed_at = ending.completed_at
        assistant.cited, assistant.calls = list(ending.citations), list(ending.tool_calls)
        conversation.updated_at = ending.completed_at
        if ending.title:
            conversation.name = ending.title
        user_message = copy.copy(self.user_message)
        user_message.cited = user_message.calls = []  # a question cites nothing, calls no tool
        return TurnRows(conversation, user_message, assistant)


@dataclass(frozen=True)
class _Rows:
    """What a mode wrote: the user message and the reply, the reply's stream so far, its earlier tokens and
    how many messages the conversation gained."""

    user_message: Message
    assistant: Message
    stream: StreamRecord
    base_tokens: tuple[int, int] = (0, 0)
    added: int = 2


# --- starting a turn: check, then one mode ----------------------------------------------------------


class ReplyRunning(Exception):
    """turn_start found the conversation's reply still being generated."""


class QueueWaiting(Exception):
    """turn_start found turns queued in the conversation: a turn of no queue would overtake them."""


@transaction.atomic
def turn_start(*, ref: ConversationRef, request: TurnRequest) -> TurnPlan:
    """Validate the request against the tree and create the turn's messages; 404 for a conversation that
    is not the tenant's under that agent, 400 for attachments that are not its files. While another reply
    runs, the index refuses the turn's (IntegrityError), or ReplyRunning for a `continue` of it."""
    started_at = time.time()
    conversation = _conversation_locked(ref)
    if (
        not request.from_queue
        and QueuedTurn.objects.filter(
            tenant_id=conversation.tenant_id, conversation_id=conversation.id, status=QueuedTurnStatus.QUEUED
        ).exists()
    ):
        raise QueueWaiting(conversation.agent.options.get("if_busy", "reject"))
    if request.attachments:
        file_refs_validate(tenant_id=conversation.tenant_id, conversation_id=conversation.id, refs=request.attachments)
    endpoint_id = ""
    if request.webhook_url:
        endpoint_id = webhook_endpoint_for_url(tenant_id=conversation.tenant_id, url=request.webhook_url)
        if endpoint_id is None:
            raise Invalid(
                "webhook_url: not one of the tenant's active webhook endpoints (register it with POST .../webhooks).",
                details={"webhook_url": request.webhook_url},
            )
    now = timezone.now()
    if request.regenerate:
        rows = _regenerate(conversation, request.regenerate, now=now)
    elif request.continue_:
        rows = _continue(conversation, now=now)
    elif request.parent_id:
        rows = _branch(conversation, request, now=now)
    else:
        rows = _new_message(conversation, request, now=now)
    if endpoint_id:  # (in the turn's transaction: set before the reply can end)
        rows.assistant.webhook_endpoint_id = endpoint_id
        Message.objects.filter(pk=rows.assistant.id).update(webhook_endpoint_id=endpoint_id)
    conversation.current_message_id = rows.assistant.id
    conversation.message_count += rows.added
    conversation.updated_at = now
    conversation.last_engine, conversation.last_model = rows.assistant.engine, rows.assistant.model
    conversation.save(update_fields=["current_message", "message_count", "updated_at", "last_engine", "last_model"])
    return _plan(conversation, rows, request, started_at=started_at)


def _conversation_locked(ref: ConversationRef) -> Conversation:
    # The row lock serialises turns of one conversation across processes; the partial unique index on
    # in-progress messages refuses a second running reply (turn_start_or_conflict names it).
    try:
        return (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("agent")
            .annotate(has_indexed_files=conversation_has_indexed_files())
            .get(tenant_id=ref.tenant_id, agent_id=ref.agent_id, pk=ref.conversation_id)
        )
    except Conversation.DoesNotExist:
        raise NotFound("Conversation not found.") from None


def _new_message(conversation: Conversation, request: TurnRequest, *, now: datetime) -> _Rows:
    """A question after the conversation's current message."""
    return _message_pair(conversation, request, parent_id=conversation.current_message_id, now=now)


def _branch(conversation: Conversation, request: TurnRequest, *, now: datetime) -> _Rows:
    """A question after an earlier reply (or at the top, with "root"): a new branch of the tree."""
    parent_id = None
    if request.parent_id != ROOT:
        parent = _conversation_message(conversation, request.parent_id, "parent_id")
        if parent.role != Role.ASSISTANT:
            raise Invalid('parent_id: must be an assistant message (or "root").', details={"parent_id": parent.id})
        parent_id = parent.id
    return _message_pair(conversation, request, parent_id=parent_id, now=now)


def _regenerate(conversation: Conversation, message_id: str, *, now: datetime) -> _Rows:
    """A new reply to the question an earlier reply answered: a sibling of that reply."""
    target = _conversation_message(conversation, message_id, "regenerate")
    if target.role != Role.ASSISTANT or target.parent_id is None:
        raise Invalid("regenerate: must be an assistant message.", details={"regenerate": target.id})
    user_message = target.parent
    assistant = _assistant(conversation, parent=user_message, now=now)
    assistant.save(force_insert=True)
    return _Rows(user_message, assistant, _first_events(assistant), added=1)


def _continue(conversation: Conversation, *, now: datetime) -> _Rows:
    """The last reply goes on: the same message, its stream resumed where it ended."""
    # Read now, after the lock: a reply finished or swept meanwhile is seen whole.
    assistant = conversation.current_message
    if assistant is None or assistant.role != Role.ASSISTANT:
        raise Invalid("continue: the last message is not the assistant's.", details={"continue": True})
    if assistant.status == MessageStatus.IN_PROGRESS:  # updating it would not trip the index
        raise ReplyRunning
    assistant.run_id = new_run_id()
    stored = StreamRecord(index=assistant.stream_index)
    if stored.index:
        # Its end dropped, the events so far keep their ids: a client resuming from any id it saw gets
        # exactly the rest.
        stream = StreamRecord(
            content=assistant.content,
            thinking=assistant.thinking,
            index=[entry for entry in assistant.stream_index if entry[1] not in END_KINDS],
            extra=assistant.extra_events,
            first_seq=stored.next_seq,
        )
    else:  # a reply stored without its stream: the text so far is the first delta
        stream = _first_events(assistant)
        if assistant.thinking:
            stream.add({"thinking": assistant.thinking})
        if assistant.content:
            stream.add({"content": assistant.content})
    assistant.status, assistant.error, assistant.completed_at, assistant.heartbeat_at = (
        MessageStatus.IN_PROGRESS,
        "",
        None,
        now,
    )
    assistant.stream_index, assistant.extra_events = stream.index, stream.extra
    assistant.finish_reason = ""
    # Its producer is now the agent's engine and model: the rest is theirs.
    assistant.engine, assistant.model = conversation.agent.engine, conversation.agent.model
    assistant.save(
        update_fields=[
            "status", "error", "completed_at", "heartbeat_at", "run_id", "stream_index", "extra_events",
            "finish_reason", "engine", "model",
        ]
    )  # fmt: skip
    base_tokens = (assistant.input_tokens, assistant.output_tokens)
    return _Rows(assistant.parent, assistant, stream, base_tokens=base_tokens, added=0)


def _message_pair(conversation: Conversation, request: TurnRequest, *, parent_id: str | None, now: datetime) -> _Rows:
    user_message = Message(
        tenant_id=conversation.tenant_id,
        conversation=conversation,
        parent_id=parent_id,
        role=Role.USER,
        content=request.content,
        attachments=request.attachments,
        metadata=request.metadata,
        status=MessageStatus.COMPLETED,
        created_at=now,
        completed_at=now,
    )
    assistant = _assistant(conversation, parent=user_message, now=now + timedelta(microseconds=1))
    # One INSERT: the assistant's foreign key to the user message is checked at the statement's end.
    Message.objects.bulk_create([user_message, assistant])
    return _Rows(user_message, assistant, _first_events(assistant))


def _conversation_message(conversation: Conversation, message_id: str, field_name: str) -> Message:
    message = Message.objects.filter(conversation=conversation, id=message_id).first()
    if message is None:
        raise Invalid(
            f"{field_name}: no message {message_id!r} in this conversation.", details={field_name: message_id}
        )
    return message


def _assistant(conversation: Conversation, *, parent: Message, now: datetime) -> Message:
    return Message(
        tenant_id=conversation.tenant_id,
        conversation=conversation,
        parent=parent,
        role=Role.ASSISTANT,
        status=MessageStatus.IN_PROGRESS,
        engine=conversation.agent.engine,
        model=conversation.agent.model,
        created_at=now,
        heartbeat_at=now,
        run_id=new_run_id(),
    )


def _first_events(assistant: Message) -> StreamRecord:
    stream = StreamRecord()
    stream.add(
        {
            "message": {
                "id": assistant.id,
                "user_message_id": assistant.parent_id,
                "conversation_id": assistant.conversation_id,
            }
        }
    )
    return stream


def _plan(conversation: Conversation, rows: _Rows, request: TurnRequest, *, started_at: float) -> TurnPlan:
    agent, user_message = conversation.agent, rows.user_message
    if user_message.parent_id is None:  # a conversation's first message, or a new branch at the top
        branch = [user_message]
    else:
        branch = message_branch(conversation=conversation, tip_id=user_message.id)
    context = TurnContext(
        tenant_id=conversation.tenant_id,
        conversation_id=conversation.id,
        message_id=rows.assistant.id,
        system_prompt=agent.system_prompt,
        history=_history(agent, branch),
        model=agent.model,
        options=dict(agent.options),
        attachments=list(user_message.attachments),
        reasoning=request.reasoning,
        continue_from=rows.assistant.content if request.continue_ else "",
        has_indexed_files=conversation.has_indexed_files,
    )
    needs_title = not conversation.name and conversation.title_source == TitleSource.PROPOSED
    return TurnPlan(
        tenant_id=conversation.tenant_id,
        conversation_id=conversation.id,
        user_message_id=user_message.id,
        message_id=rows.assistant.id,
        run_id=rows.assistant.run_id,
        agent=agent,
        context=context,
        stream=rows.stream.snapshot(),
        base_tokens=rows.base_tokens,
        started_at=started_at,
        title_from=branch[0].content if needs_title and branch else "",
        rows=None if request.continue_ else TurnRows(conversation, user_message, rows.assistant),
        webhook_endpoint_id=rows.assistant.webhook_endpoint_id,
    )


def _history(agent: Agent, branch: list[Message]) -> list[ChatMessage]:
    """The branch as chat messages, oldest first out when over the agent's history budget."""
    budget = agent.options.get("history_tokens", settings.HISTORY_TOKENS_DEFAULT) - estimate_tokens(agent.system_prompt)
    chosen: list[ChatMessage] = []
    for position, message in enumerate(reversed(branch)):
        if not message.content and position:
            continue  # an assistant reply that failed before writing anything
        cost = estimate_tokens(message.content)
        if position and cost > budget:
            break
        chosen.append(ChatMessage(role=message.role, content=message.content))
        budget -= cost
    return list(reversed(chosen))


def turn_start_or_conflict(*, ref: ConversationRef, request: TurnRequest) -> TurnPlan:
    """turn_start, or 409 naming the reply being generated. Most posts find none, so it is looked for
    only once the unique index refused this turn's reply; one left running by a dead process is swept,
    and the turn tried again."""
    for _ in range(TURN_ATTEMPTS):
        try:
            return turn_start(ref=ref, request=request)
        except IntegrityError as exc:
            if getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None) != RUNNING_CONSTRAINT:
                raise Conflict("The conversation changed while the turn started; try again.") from None
        except ReplyRunning:
            pass
        except QueueWaiting as exc:
            if_busy = request.if_busy or exc.args[0]
            raise Conflict(QUEUED, details={"if_busy": if_busy, "queued": True}) from None
        # A query of its own, after the failed turn: it sees the reply that turn collided with. One whose
        # process died is failed here only if its agent says so; else a sweep is about to continue it.
        running = (
            Message.objects.filter(
                tenant_id=ref.tenant_id, conversation_id=ref.conversation_id, status=MessageStatus.IN_PROGRESS
            )
            .select_related("conversation__agent")
            .first()
        )
        if running is not None and not (on_crash(running) == "fail" and message_sweep_if_stale(running)):
            if_busy = request.if_busy or running.conversation.agent.options.get("if_busy", "reject")
            raise Conflict(RUNNING, details={"message_id": running.id, "if_busy": if_busy})
    raise Conflict(RUNNING)


# --- running a generation ----------------------------------------------------------------------


@dataclass
class Generation:
    """A running reply, owned by its task: the stream it has published so far and where it stands."""

    plan: TurnPlan
    stream: StreamRecord
    task: asyncio.Task | None = None
    cancel_requested: bool = False
    stepping: bool = False  # the task has begun: before that a cancel is a flag it checks first
    finishing: bool = False  # storing the end: a cancel now would lose the stream's end
    handing_over: bool = False  # stopped by the drain: another process (or this one restarted) goes on
    lost: bool = False  # another run took the reply over (this process looked dead): stop, store nothing

    def lose(self) -> None:
        if not self.finishing and self.task is not None and not self.task.done():
            self.lost = True
            self.task.cancel()


@dataclass(frozen=True)
class Outcome:
    status: str
    error: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    title: str = ""  # stored with the reply: a title that needs no model
    finish_reason: str = ""  # "stop" or "length" for a completed reply


@dataclass(frozen=True)
class Ending:
    """How a generation ended, as stored."""

    outcome: Outcome
    stream: StreamSnapshot
    completed_at: datetime | None  # None when the end was not stored (the database failed, or the reply is gone)
    title: str = ""  # the title stored with it
    citations: tuple[Citation, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    lost: bool = False  # the run no longer owns the reply (deleted, swept, taken over): it publishes no end


# Generations running in this process, so that a cancel arriving here stops them at once.
_running: dict[str, Generation] = {}


async def turn_launch(*, ref: ConversationRef, request: TurnRequest) -> tuple[TurnPlan, asyncio.Task]:
    """Start a turn and its generation as one unit that runs to its end even if the request is cancelled
    (its client went away) meanwhile: a committed turn always gets its generation. With
    `on_disconnect: "cancel"`, a request cancelled here cancels the generation once it exists."""

    async def launch() -> tuple[TurnPlan, asyncio.Task]:
        plan = await in_worker(turn_start_or_conflict)(ref=ref, request=request)
        generation = await generation_start(plan)
        if plan.rows is not None:  # (a continued reply is no new message)
            rows = plan.rows
            for message in [rows.assistant] if request.regenerate else [rows.user_message, rows.assistant]:
                await conversation_anotify(
                    plan.conversation_id, "message.created", message_id=message.id, role=message.role,
                    parent_id=message.parent_id,
                )  # fmt: skip
        return plan, generation

    launching = asyncio.ensure_future(launch())
    try:
        return await asyncio.shield(launching)
    except asyncio.CancelledError:
        launching.add_done_callback(functools.partial(_launched_for_nobody, cancel=request.on_disconnect == "cancel"))
        raise


# --- queued turns (if_busy: "enqueue") ------------------------------------------------------------------


def if_busy_of(ref: ConversationRef, request: TurnRequest) -> str:
    """What the post does while a reply runs: its own `if_busy`, else its agent's, else reject."""
    if request.if_busy:
        return request.if_busy
    options = Agent.objects.filter(tenant_id=ref.tenant_id, pk=ref.agent_id).values_list("options", flat=True).first()
    return (options or {}).get("if_busy", "reject")


@transaction.atomic
def turn_enqueue(*, ref: ConversationRef, request: TurnRequest, first: bool = False) -> QueuedTurn:
    """Queue the turn behind the conversation's running reply and earlier queued turns, or `first` (an
    interrupt); 404 for a conversation that is not the tenant's under that agent, 409 past QUEUE_MAX."""
    if not _conversation_queue_locked(ref):
        raise NotFound("Conversation not found.")
    waiting = QueuedTurn.objects.filter(
        tenant_id=ref.tenant_id, conversation_id=ref.conversation_id, status=QueuedTurnStatus.QUEUED
    )
    if waiting.count() >= QUEUE_MAX:
        raise Conflict(f"{QUEUE_MAX} messages are queued in this conversation already.")
    created_at = timezone.now()
    if first and (head := waiting.order_by("created_at", "id").first()) is not None:
        created_at = min(created_at, head.created_at - timedelta(microseconds=1))
    return QueuedTurn.objects.create(
        tenant_id=ref.tenant_id, conversation_id=ref.conversation_id, request=request.queued(), created_at=created_at
    )


def _conversation_queue_locked(ref: ConversationRef) -> bool:
    """Lock the conversation's row (the queue's order is decided under it); False if it is not there."""
    locked = (
        Conversation.objects.select_for_update(of=("self",))
        .filter(tenant_id=ref.tenant_id, agent_id=ref.agent_id, pk=ref.conversation_id)
        .values_list("pk", flat=True)
        .first()
    )
    return locked is not None


QUEUE_POLL_SECONDS = 0.1


async def turn_begin(
    *, ref: ConversationRef, request: TurnRequest
) -> tuple[TurnPlan, asyncio.Task] | tuple[QueuedTurn, None]:
    """Start the turn (turn_launch: its plan and generation). While a reply runs or turns are queued, what
    `if_busy` says (the request's, else its agent's): enqueue queues it and waits until it has started;
    interrupt puts it first in the queue, cancels the running reply and waits the same (its queued row is
    answered, started, by this process or another); reject is the 409."""
    if request.if_busy != "enqueue":
        try:
            return await turn_launch(ref=ref, request=request)
        except Conflict as exc:
            if exc.details.get("if_busy") not in ("enqueue", "interrupt"):
                raise
            if exc.details["if_busy"] == "interrupt":
                return await turn_enqueued(ref=ref, request=request, wait=True, interrupt=True), None
    return await turn_enqueued(ref=ref, request=request, wait=True), None


async def turn_enqueued(
    *, ref: ConversationRef, request: TurnRequest, wait: bool, interrupt: bool = False
) -> QueuedTurn:
    """Queue the turn (first, cancelling the running reply, with `interrupt`), start it if its time has
    come, and (`wait`) wait until it has started: 404 if the conversation was deleted meanwhile, 409 if
    the turn was cancelled, 400 if it could not start."""
    queued = await in_worker(turn_enqueue)(ref=ref, request=request, first=interrupt)
    if interrupt:
        running = await in_worker(_running_reply_id)(ref.conversation_id)
        if running is not None:
            await generation_cancel(running)  # its end starts the queue's first turn: this one
    queued_id = queued.pk
    try:
        # Shielded: a client gone meanwhile must not leave a started turn without its generation.
        await asyncio.shield(asyncio.ensure_future(queued_turns_advance(ref.conversation_id)))
        while True:
            queued = await QueuedTurn.objects.filter(pk=queued_id).afirst()
            if queued is None:  # deleted with its conversation
                raise NotFound("Conversation not found.")
            if not wait or queued.status == QueuedTurnStatus.STARTED:
                return queued
            if queued.status == QueuedTurnStatus.CANCELLED:
                raise Conflict(
                    "The queued message was cancelled before its turn.", details={"queued_turn_id": queued.id}
                )
            if queued.status == QueuedTurnStatus.FAILED:
                raise Invalid(queued.error, details={"queued_turn_id": queued.id})
            await asyncio.sleep(QUEUE_POLL_SECONDS)
    except asyncio.CancelledError:
        if request.on_disconnect == "cancel":  # the client went away: its turn leaves the queue (if still in it)
            task = asyncio.ensure_future(in_worker(queued_turn_cancel)(queued_id))
            _advancing.add(task)
            task.add_done_callback(_advancing.discard)
        raise


def queued_turn_cancel(queued_id: str) -> bool:
    """Take a turn out of the queue if it is still in it (not once it has started)."""
    return bool(
        QueuedTurn.objects.filter(pk=queued_id, status=QueuedTurnStatus.QUEUED).update(
            status=QueuedTurnStatus.CANCELLED
        )
    )


def _running_reply_id(conversation_id: str) -> str | None:
    return (
        Message.objects.filter(conversation_id=conversation_id, status=MessageStatus.IN_PROGRESS)
        .values_list("id", flat=True)
        .first()
    )


async def reply_ended(message_id: str) -> None:
    """Wait until the reply has ended, wherever it runs."""
    generation = _running.get(message_id)
    if generation is not None and not generation.task.done():
        await asyncio.shield(generation.task)
        return
    async for batch in message_events(message_id):
        if batch and is_terminal(batch[-1][1]):
            return


@owner_scope()  # from any process, for any tenant's conversation
def queued_turn_start_next(conversation_id: str) -> TurnPlan | None:
    """Start the conversation's oldest queued turn if no reply runs (None if none started). A queued turn
    that can no longer start (its parent was deleted, an attachment too) is marked failed, and the next
    one tried."""
    while True:
        with transaction.atomic():
            # The conversation's row first: starts (and enqueues) of one conversation go one at a time, so
            # the head is always the one started.
            if Conversation.objects.select_for_update(of=("self",)).filter(pk=conversation_id).first() is None:
                return None
            queued = (
                QueuedTurn.objects.select_for_update()
                .select_related("conversation")
                .filter(conversation_id=conversation_id, status=QueuedTurnStatus.QUEUED)
                .order_by("created_at", "id")
                .first()
            )
            if queued is None:
                return None
            try:
                request = TurnRequest.of_queued(queued.request)
            except TypeError as exc:  # (a request no version of it can read)
                queued.status, queued.error = QueuedTurnStatus.FAILED, f"Unreadable queued turn: {exc}"[:500]
                queued.save(update_fields=["status", "error"])
                continue
            try:
                with transaction.atomic():  # (a savepoint: a refused turn leaves the queued row locked)
                    plan = turn_start(ref=ConversationRef.of(queued.conversation), request=request)
            except (IntegrityError, ReplyRunning):  # a reply runs: its end starts this one
                return None
            except (Invalid, NotFound) as exc:
                queued.status, queued.error = QueuedTurnStatus.FAILED, exc.message[:500]
                queued.save(update_fields=["status", "error"])
                continue
            queued.status, queued.started_at = QueuedTurnStatus.STARTED, timezone.now()
            queued.user_message_id, queued.message_id = plan.user_message_id, plan.message_id
            queued.save(update_fields=["status", "started_at", "user_message_id", "message_id"])
            return plan


async def queued_turns_advance(conversation_id: str) -> TurnPlan | None:
    """Start the conversation's next queued turn, if its time has come, here."""
    plan = await in_worker(queued_turn_start_next)(conversation_id)
    if plan is not None:
        await generation_start(plan)
        for message_id in (plan.user_message_id, plan.message_id):
            await conversation_anotify(plan.conversation_id, "message.created", message_id=message_id)
    return plan


_advancing: set[asyncio.Task] = set()


def queued_turns_advance_soon(conversation_id: str) -> None:
    task = asyncio.get_running_loop().create_task(queued_turns_advance(conversation_id), context=scoped_context(None))
    _advancing.add(task)
    task.add_done_callback(_advancing.discard)


@owner_scope()
def conversations_with_queue_waiting() -> list[str]:
    """Conversations whose queued turns wait while no reply runs (a process died between a reply's end
    and the next start): the sweep starts them."""
    running = Message.objects.filter(conversation_id=OuterRef("conversation_id"), status=MessageStatus.IN_PROGRESS)
    return list(
        QueuedTurn.objects.filter(status=QueuedTurnStatus.QUEUED)
        .filter(~Exists(running))
        .values_list("conversation_id", flat=True)
        .distinct()[:100]
    )


def _launched_for_nobody(launching: asyncio.Future, *, cancel: bool) -> None:
    # exception() also marks a refusal (409) or failure as seen: nobody is left to be told.
    if launching.cancelled() or launching.exception() is not None:
        return
    if cancel:
        generation_cancel_soon(launching.result()[0].message_id)


_cancelling: set[asyncio.Task] = set()


def generation_cancel_soon(message_id: str) -> None:
    """generation_cancel from code that cannot await it (a response being torn down, a callback)."""
    task = asyncio.ensure_future(generation_cancel(message_id))
    _cancelling.add(task)
    task.add_done_callback(_cancelling.discard)


async def generation_start(plan: TurnPlan, *, resumed: bool = False) -> asyncio.Task:
    """Open the message's live log with its first events, then run the generation in its own task. A reply
    resumed from its live log keeps it (what it holds already is not added again; followers follow on)."""
    log, stream = stream_log(), plan.stream
    try:
        if not resumed:
            await log.reset(plan.message_id)
        for seq, event in rebuild_events(
            content=stream.content, thinking=stream.thinking, index=stream.index, extra=stream.extra, after=-1
        ):
            await log.append(plan.message_id, seq, event)
    except Exception:  # the log's store failed: the turn is committed, so its generation runs (and ends) anyway
        logger.exception("Opening the live log of %s failed", plan.message_id)
    # A turn that started after the drain handed the others over is handed over before its first step.
    generation = Generation(plan, StreamRecord.of(stream), handing_over=handed_over())
    # A fresh context: nothing of the request (its thread-sensitive executor) is inherited but its tenant.
    generation.task = asyncio.get_running_loop().create_task(
        _generate(generation), name=f"generation {plan.message_id}", context=scoped_context(plan.tenant_id)
    )
    _running[plan.message_id] = generation
    generation.task.add_done_callback(lambda _: _forget(generation))
    return generation.task


def _forget(generation: Generation) -> None:
    # `continue` reuses the message id: only forget the entry if it is still this run's.
    if _running.get(generation.plan.message_id) is generation:
        del _running[generation.plan.message_id]


async def generation_cancel(message_id: str) -> None:
    """Ask the generation to stop, wherever it runs (this process directly, others via the stream log)."""
    generation = _running.get(message_id)
    if generation is not None and not generation.task.done() and not generation.finishing:
        generation.cancel_requested = True
        if generation.stepping:  # a task cancelled before its first step would never store its end
            generation.task.cancel()
    try:
        await stream_log().request_cancel(message_id)
    except Exception:  # Redis is unreachable: a generation here is stopped; one elsewhere cannot be told
        logger.exception("Requesting the cancel of %s from other processes failed", message_id)


def generation_runs_here(message_id: str) -> bool:
    generation = _running.get(message_id)
    return generation is not None and not generation.task.done()


# --- replies of stopping and dead processes ----------------------------------------------------


async def generations_drain(*, seconds: float) -> int:
    """Let this process's generations (and those starting meanwhile) run for up to `seconds`, then hand
    the rest over: each stops where it is, its progress stored for the next sweep of any process to take
    it over (stale_replies_take_over). Returns how many were handed over."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (tasks := [g.task for g in _running.values() if not g.task.done()]) and loop.time() < deadline:
        await asyncio.wait(tasks, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED)
    rest = [generation for generation in _running.values() if not generation.task.done()]
    for generation in rest:
        generation.handing_over = True
        if generation.stepping and not generation.finishing:  # before its first step it checks the flag
            generation.task.cancel()
    if rest:
        await asyncio.wait([generation.task for generation in rest])
    return len(rest)


async def stale_replies_take_over(*, alive_since: datetime | None = None) -> tuple[int, int]:
    """Settle the replies whose process died (turns.services.message_sweep_stale) and continue those
    claimed here, on the same stream; returns (failed, continued)."""
    failed, claims = await in_worker(message_sweep_stale)(alive_since=alive_since)
    continued = 0
    for claim in claims:
        try:
            with tenant_scope(claim.message.tenant_id):  # its plan is read as its tenant's requests read
                plan = await in_worker(_resume_plan)(claim)
                await generation_start(plan, resumed=claim.live)
        except Exception:  # it keeps the claim's heartbeat: once stale again, a sweep tries again
            logger.exception("Continuing reply %s failed", claim.message.id)
        else:
            continued += 1
    return failed, continued


def _resume_plan(claim: Claim) -> TurnPlan:
    """The plan of a claimed reply: a `continue` of it (same message, stream and history), resumed."""
    message, stream = claim.message, claim.stream
    conversation = (
        Conversation.objects.select_related("agent")
        .annotate(has_indexed_files=conversation_has_indexed_files())
        .get(pk=message.conversation_id)
    )
    rows = _Rows(
        message.parent,
        message,
        StreamRecord.of(stream),
        base_tokens=(message.input_tokens, message.output_tokens),
        added=0,
    )
    request = TurnRequest(continue_=True, reasoning=bool(stream.thinking))
    plan = _plan(conversation, rows, request, started_at=claim.since)
    streamed_events = sum(1 for event in stream.extra if "message" not in event)
    context = dataclasses.replace(
        plan.context, resumed=True, continued_thinking=stream.thinking, continued_events=streamed_events
    )
    return dataclasses.replace(plan, context=context)


async def _watch_for_cancel(generation: Generation) -> None:
    """Beside the engine: stop it when a cancel is requested from any process."""
    log, plan = stream_log(), generation.plan
    while True:
        await asyncio.sleep(CANCEL_POLL_SECONDS)
        try:
            requested = await log.is_cancel_requested(plan.message_id, since=plan.started_at)
        except Exception:  # a Redis blip: ask again next time
            logger.warning("Checking generation %s for a cancel failed", plan.message_id, exc_info=True)
            continue
        if requested and not generation.finishing:
            generation.cancel_requested = True
            generation.task.cancel()
            return


async def _generate(generation: Generation) -> Ending:
    plan = generation.plan
    generation.stepping = True
    writer = progress_writer()
    writer.track(plan.message_id, plan.run_id, generation.stream, on_lost=generation.lose)
    watcher = asyncio.create_task(_watch_for_cancel(generation))
    try:
        outcome = await _run_engine(generation)
    finally:
        generation.finishing = True
        watcher.cancel()
        writer.forget(plan.message_id, generation.stream)
    ending = await _end(generation, outcome)
    if plan.title_from and outcome.status == MessageStatus.COMPLETED and not outcome.title:
        try:
            title = await _title_conversation(plan)
        except Exception:  # the reply is stored and ended: a title that could not be saved stays unset
            logger.exception("Titling conversation %s failed", plan.conversation_id)
        else:
            if title and ending.completed_at is not None:
                ending = dataclasses.replace(ending, title=title)
    return ending


async def _run_engine(generation: Generation) -> Outcome:
    """Drive the engine, publishing its events; the outcome is what the end stores."""
    plan, stream, log = generation.plan, generation.stream, stream_log()
    input_tokens = output_tokens = 0
    nul_replaced, finish_reason = False, "stop"
    try:
        # Cancelled between its commit and this first step: here, or from anywhere through the log.
        if not generation.cancel_requested:
            generation.cancel_requested = await log.is_cancel_requested(plan.message_id, since=plan.started_at)
        if generation.cancel_requested or generation.handing_over:
            raise asyncio.CancelledError
        # Tool call ids are unique within the reply: a later run's (a continue, a takeover) that repeats an
        # earlier one's is streamed, with its result, under a new one.
        call_ids = {event["tool_call"]["id"] for event in stream.extra if "tool_call" in event}
        renamed: dict[str, str] = {}
        async with contextlib.aclosing(engine_for(plan.agent.engine).run(plan.context)) as events:
            async for event in events:
                if isinstance(event, Usage):
                    input_tokens += event.input_tokens
                    output_tokens += event.output_tokens
                    continue
                if isinstance(event, Finished):
                    finish_reason = event.reason
                    continue
                if isinstance(event, ToolCallStarted) and event.id in call_ids:
                    renamed[event.id] = f"{event.id}_{len(call_ids)}"
                    event = dataclasses.replace(event, id=renamed[event.id])
                elif isinstance(event, ToolCallEnded) and event.id in renamed:
                    event = dataclasses.replace(event, id=renamed[event.id])
                if isinstance(event, ToolCallStarted):
                    call_ids.add(event.id)
                payload = wire_event(event)
                if payload is not None:
                    payload, replaced = storable(payload)
                    nul_replaced = nul_replaced or replaced
                    await log.append(plan.message_id, stream.add(payload), payload)
    except asyncio.CancelledError:
        if generation.cancel_requested:
            status, error = MessageStatus.CANCELLED, ""
        elif generation.handing_over or generation.lost:
            status, error = MessageStatus.IN_PROGRESS, ""
        else:
            status, error = MessageStatus.FAILED, INTERRUPTED  # the server is shutting down
    except EngineFailure as exc:
        status, error = MessageStatus.FAILED, str(exc) or "The engine failed."
    except Exception:
        logger.exception("Generation %s failed", plan.message_id)
        status, error = MessageStatus.FAILED, "The engine failed unexpectedly."
    else:
        status, error = MessageStatus.COMPLETED, ""
    if nul_replaced and not error:
        error = NUL_REPLACED  # (the reply is whole otherwise: completed, cancelled)
    title = ""
    if plan.title_from and status == MessageStatus.COMPLETED:  # one that needs no model goes with the reply
        title = title_without_model(agent=plan.agent, first_message=plan.title_from) or ""
    finish_reason = finish_reason if status == MessageStatus.COMPLETED else ""
    return Outcome(status, error, input_tokens, output_tokens, title, finish_reason)


async def _end(generation: Generation, outcome: Outcome) -> Ending:
    """Store the end, then publish it, so that a client that sees `done` finds the message stored."""
    plan, stream = generation.plan, generation.stream
    if outcome.status == MessageStatus.IN_PROGRESS:
        if generation.lost:  # the run that owns it now publishes and stores its end
            return Ending(outcome, stream.snapshot(), completed_at=None, lost=True)
        return await _hand_over(plan, stream.snapshot(), outcome)
    final = [{"error": outcome.error}]
    if outcome.status != MessageStatus.FAILED:
        final = [{"tokens": outcome.input_tokens + outcome.output_tokens}, {"done": True, "status": outcome.status}]
    final = [(stream.add(event), event) for event in final]
    ending = await _store_end(plan, stream.snapshot(), outcome)
    if ending.lost:
        return ending
    if ending.completed_at is None:
        # Not stored (the database is unreachable): still end the stream, so no client waits forever;
        # the sweep fails the message once its heartbeat is stale.
        final = [(final[0][0], {"error": "The reply could not be stored."})]
    try:
        for seq, event in final:
            await stream_log().append(plan.message_id, seq, event)
    except Exception:  # the log's store failed: followers finish from the stored message
        logger.exception("Publishing the end of generation %s failed", plan.message_id)
    if ending.completed_at is not None:
        await conversation_anotify(
            plan.conversation_id, "message.completed", message_id=plan.message_id, status=outcome.status
        )
        queued_turns_advance_soon(plan.conversation_id)  # the next queued turn, if any
        if ending.title:
            await conversation_anotify(plan.conversation_id, "conversation.updated", name=ending.title)
    return ending


async def _store_end(plan: TurnPlan, stream: StreamSnapshot, outcome: Outcome) -> Ending:
    for attempt in range(FINISH_ATTEMPTS):
        try:
            return await in_worker(_finish_and_count)(plan, stream, outcome)
        except DatabaseErrors:
            logger.exception("Storing the end of generation %s failed (attempt %d)", plan.message_id, attempt + 1)
            await asyncio.sleep(0.5 * (attempt + 1))
    return Ending(outcome, stream, completed_at=None)


def _finish_and_count(plan: TurnPlan, stream: StreamSnapshot, outcome: Outcome) -> Ending:
    """Store the end, then, once it is committed, count the reply's usage (see usage_record): a usage that
    cannot be written is logged, and the stored end stands."""
    ending = _finish(plan, stream, outcome)
    if ending.completed_at is not None:
        try:
            usage_record(
                tenant_id=plan.tenant_id,
                agent_id=plan.agent.id,
                engine=plan.agent.engine,
                model=plan.agent.model,
                requests=1,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
            )
        except DatabaseErrors:
            logger.exception("Recording the usage of generation %s failed", plan.message_id)
    return ending


def _owned(plan: TurnPlan):
    return Message.objects.filter(pk=plan.message_id, status=MessageStatus.IN_PROGRESS, run_id=plan.run_id)


async def _hand_over(plan: TurnPlan, stream: StreamSnapshot, outcome: Outcome) -> Ending:
    """A generation the drain stopped: store what it streamed, and a heartbeat old enough that the next
    sweep of any process (this one's at its restart, without Redis) takes the reply over at once."""
    stale = timezone.now() - timedelta(seconds=settings.GENERATION_STALE_SECONDS + 1)
    try:
        await in_worker(_owned(plan).update)(
            content=stream.content,
            thinking=stream.thinking,
            stream_index=list(stream.index),
            extra_events=list(stream.extra),
            heartbeat_at=stale,
            run_id=new_run_id(),  # no run's: a progress write of this one still under way changes nothing
        )
    except DatabaseErrors:  # its last flush stays; the log (Redis) has the rest, and it goes stale anyway
        logger.exception("Handing over generation %s failed", plan.message_id)
    return Ending(outcome, stream, completed_at=None, lost=True)


@transaction.atomic
def _finish(plan: TurnPlan, stream: StreamSnapshot, outcome: Outcome) -> Ending:
    # The conversation's row first, as a starting turn takes it: a turn that starts meanwhile (a queued
    # one) then finds this reply still running, instead of waiting for it while it waits for the row.
    Conversation.objects.select_for_update(of=("self",)).filter(pk=plan.conversation_id).values_list("pk").first()
    now = timezone.now()
    # Only a running message of this run: the sweep may have failed it or given it to another process's
    # run meanwhile (this process looked dead).
    stored = _owned(plan).update(
        content=stream.content,
        thinking=stream.thinking,
        stream_index=list(stream.index),
        extra_events=list(stream.extra),
        status=outcome.status,
        error=outcome.error,
        finish_reason=outcome.finish_reason,
        # The producer of its latest run (a reply taken over or continued after the agent changed: the new one).
        engine=plan.agent.engine,
        model=plan.agent.model,
        input_tokens=plan.base_tokens[0] + outcome.input_tokens,
        output_tokens=plan.base_tokens[1] + outcome.output_tokens,
        completed_at=now,
        heartbeat_at=None,
    )
    if not stored:  # deleted with its conversation, swept or taken over
        return Ending(outcome, stream, completed_at=None, lost=True)
    # The citations and tool calls streamed, by any run of the reply (one taken over streamed some before
    # it died): a continued reply's rows already stored are kept.
    cited, calls = streamed_rows_store(tenant_id=plan.tenant_id, message_id=plan.message_id, extra=stream.extra)
    conversations = Conversation.objects.filter(pk=plan.conversation_id)
    # A title fills an untitled conversation, never over a name someone gave it meanwhile.
    changes = {"updated_at": now, "last_engine": plan.agent.engine, "last_model": plan.agent.model}
    titled = outcome.title and conversations.filter(name="", title_source=TitleSource.PROPOSED).update(
        name=outcome.title, **changes
    )
    if not titled:
        conversations.update(**changes)
    title = outcome.title if titled else ""
    message_end_webhook(
        tenant_id=plan.tenant_id, message_id=plan.message_id, status=outcome.status, also=plan.webhook_endpoint_id
    )
    return Ending(outcome, stream, now, title=title, citations=tuple(cited), tool_calls=tuple(calls))


async def _title_conversation(plan: TurnPlan) -> str:
    """Give an untitled conversation a proposed title after its first reply (never over a user's); returns
    the title stored, or "" when someone named the conversation meanwhile."""
    try:
        title = await title_propose(agent=plan.agent, first_message=plan.title_from)
    except EngineFailure:
        title = title_from_keywords(plan.title_from)
    untitled = Conversation.objects.filter(pk=plan.conversation_id, name="", title_source=TitleSource.PROPOSED)
    if not await in_worker(untitled.update)(name=title):
        return ""
    await conversation_anotify(plan.conversation_id, "conversation.updated", name=title)
    return title
