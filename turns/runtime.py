"""One turn of an agent (DESIGN.md section 5).

`turn_start` locks the conversation and, in one transaction, creates the user message and an
`in_progress` assistant message and builds the engine's prompt. `generation_start` then drives the
engine in an asyncio task of its own, so the reply does not depend on the HTTP connection: it publishes
every event to the message's stream log, flushes partial content at least every
GENERATION_FLUSH_SECONDS, and stores the final message, its citations and the tenant's usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import Error as DatabaseErrors  # DatabaseError, and InterfaceError for a closed connection
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.engines import ChatMessage, Citations, EngineFailure, TurnContext, Usage, engine_for
from agents.engines.base import estimate_tokens
from agents.models import Agent
from agents.titles import title_from_keywords, title_propose, title_without_model
from conversations.models import Citation, Conversation, Message, MessageStatus, Role, TitleSource
from conversations.selectors import message_branch
from core.db import in_worker
from core.errors import Conflict, Invalid, NotFound
from files.selectors import conversation_has_indexed_files, file_refs_validate
from tenants.services import usage_record
from turns.events import END_KINDS, StreamRecord, rebuild_events, wire_event
from turns.log import stream_log
from turns.services import INTERRUPTED, message_sweep_if_stale

logger = logging.getLogger(__name__)

ROOT = "root"  # `parent_id: "root"` starts a new branch at the top of the conversation
HEARTBEAT_SECONDS = 10
FINISH_ATTEMPTS = 3
CANCEL_POLL_SECONDS = 0.5  # a cancel stops a generation well within the 2 s it may take


@dataclass
class TurnRequest:
    content: str = ""
    attachments: list[str] = field(default_factory=list)
    parent_id: str | None = None
    regenerate: str | None = None
    continue_: bool = False
    reasoning: bool = False
    on_disconnect: str = "continue"  # or "cancel"


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


@dataclass
class TurnRows:
    """A turn's rows as it stored them: `_finish` applies the end it writes, so that the post-and-wait
    response is built from them instead of read back. Someone else's change meanwhile (a rename, feedback
    on the reply while it was generated) shows on the next read, not in this response."""

    conversation: Conversation
    user_message: Message
    assistant: Message


@dataclass
class Turn:
    tenant_id: str
    conversation_id: str
    user_message_id: str
    message_id: str  # the assistant message
    engine_name: str
    context: TurnContext
    record: StreamRecord
    base_input_tokens: int = 0
    base_output_tokens: int = 0
    cancel_requested: bool = False
    generating: bool = False  # _generate has begun: before that a cancel is a flag it checks first
    started_at: float = 0.0  # time.time() before the turn was committed: older cancel requests are not for it
    finishing: bool = False  # storing the final message: a cancel now would lose the stream's end
    title_from: str = ""  # the first question, when the conversation still waits for a proposed title
    agent: Agent | None = None
    # None for `continue` (the reply's earlier citations and feedback are in the database), and once the
    # end could not be stored as the turn knows it.
    rows: TurnRows | None = None


# --- starting a turn ---------------------------------------------------------------------------


def _conversation_message(conversation: Conversation, message_id: str, field_name: str) -> Message:
    message = Message.objects.filter(conversation=conversation, id=message_id).first()
    if message is None:
        raise Invalid(
            f"{field_name}: no message {message_id!r} in this conversation.", details={field_name: message_id}
        )
    return message


def _history(agent, branch: list[Message]) -> list[ChatMessage]:
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


class ReplyRunning(Exception):
    """turn_start found the conversation's reply still being generated."""


RUNNING = "A reply is already being generated in this conversation."
RUNNING_CONSTRAINT = "one_generation_per_conversation"
TURN_ATTEMPTS = 3


@transaction.atomic
def turn_start(*, ref: ConversationRef, request: TurnRequest) -> Turn:
    """Validate the request against the tree and create the turn's messages; 404 for a conversation that
    is not the tenant's under that agent, 400 for attachments that are not its files. While another reply
    runs, the index refuses the turn's (IntegrityError), or ReplyRunning for a `continue` of it."""
    # The row lock serialises turns of one conversation across processes; the partial unique index on
    # in-progress messages refuses a second running reply.
    started_at = time.time()
    try:
        # With whether any of its files has passages, for engines that search them (the builtin's retrieval).
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("agent")
            .annotate(has_indexed_files=conversation_has_indexed_files())
            .get(tenant_id=ref.tenant_id, agent_id=ref.agent_id, pk=ref.conversation_id)
        )
    except Conversation.DoesNotExist:
        raise NotFound("Conversation not found.") from None
    agent = conversation.agent
    if request.attachments:
        file_refs_validate(tenant_id=conversation.tenant_id, conversation_id=conversation.id, refs=request.attachments)
    # A reply still being generated is not looked for here: the partial unique index on in-progress
    # messages refuses this turn's when it is written (turn_start_or_conflict then names the running one).

    now = timezone.now()
    record = StreamRecord()
    base_tokens = (0, 0)
    if request.regenerate:
        target = _conversation_message(conversation, request.regenerate, "regenerate")
        if target.role != Role.ASSISTANT or target.parent_id is None:
            raise Invalid("regenerate: must be an assistant message.", details={"regenerate": target.id})
        user_message = target.parent
        assistant = _assistant(conversation, parent=user_message, now=now)
        assistant.save(force_insert=True)
        added = 1
    elif request.continue_:
        # Read now, after the lock: a reply finished or swept meanwhile is seen whole.
        assistant = conversation.current_message
        if assistant is None or assistant.role != Role.ASSISTANT:
            raise Invalid("continue: the last message is not the assistant's.", details={"continue": True})
        if assistant.status == MessageStatus.IN_PROGRESS:  # updating it would not trip the index
            raise ReplyRunning
        user_message = assistant.parent
        stored = StreamRecord(index=assistant.stream_index)
        if stored.index:
            # The stream goes on from where it ended, its end dropped: the events so far keep their ids,
            # so a client resuming from any id it saw gets exactly the rest.
            record = StreamRecord(
                content=assistant.content,
                thinking=assistant.thinking,
                index=[entry for entry in assistant.stream_index if entry[1] not in END_KINDS],
                extra=assistant.extra_events,
                first_seq=stored.next_seq,
            )
        else:  # a reply stored without its stream: the text so far is the first delta
            record.add(_message_event(assistant.id, user_message.id, conversation.id))
            if assistant.thinking:
                record.add({"thinking": assistant.thinking})
            if assistant.content:
                record.add({"content": assistant.content})
        base_tokens = (assistant.input_tokens, assistant.output_tokens)
        assistant.status, assistant.error, assistant.completed_at, assistant.heartbeat_at = (
            MessageStatus.IN_PROGRESS,
            "",
            None,
            now,
        )
        assistant.stream_index, assistant.extra_events = record.index, record.extra
        assistant.save(
            update_fields=["status", "error", "completed_at", "heartbeat_at", "stream_index", "extra_events"]
        )
        added = 0
    else:
        parent_id = conversation.current_message_id  # only its id: the message itself is not read
        if request.parent_id == ROOT:
            parent_id = None
        elif request.parent_id:
            parent = _conversation_message(conversation, request.parent_id, "parent_id")
            if parent.role != Role.ASSISTANT:
                raise Invalid('parent_id: must be an assistant message (or "root").', details={"parent_id": parent.id})
            parent_id = parent.id
        user_message = Message(
            tenant_id=conversation.tenant_id,
            conversation=conversation,
            parent_id=parent_id,
            role=Role.USER,
            content=request.content,
            attachments=request.attachments,
            status=MessageStatus.COMPLETED,
            created_at=now,
            completed_at=now,
        )
        assistant = _assistant(conversation, parent=user_message, now=now + timedelta(microseconds=1))
        # One INSERT: the assistant's foreign key to the user message is checked at the statement's end.
        Message.objects.bulk_create([user_message, assistant])
        added = 2

    if not record.index:
        record.add(_message_event(assistant.id, user_message.id, conversation.id))
    conversation.current_message_id = assistant.id  # the id only: no reference cycle between the two rows
    conversation.message_count += added
    conversation.updated_at = now
    conversation.save(update_fields=["current_message", "message_count", "updated_at"])

    if user_message.parent_id is None:  # a conversation's first message, or a new branch at the top
        branch = [user_message]
    else:
        branch = message_branch(conversation=conversation, tip_id=user_message.id)
    context = TurnContext(
        tenant_id=conversation.tenant_id,
        conversation_id=conversation.id,
        message_id=assistant.id,
        system_prompt=agent.system_prompt,
        history=_history(agent, branch),
        model=agent.model,
        options=dict(agent.options),
        attachments=list(user_message.attachments),
        reasoning=request.reasoning,
        continue_from=assistant.content if request.continue_ else "",
        has_indexed_files=conversation.has_indexed_files,
    )
    needs_title = not conversation.name and conversation.title_source == TitleSource.PROPOSED
    if not request.continue_:
        # New rows: nobody rated or cited them yet (and a user message never is), so the response built
        # from them needs no query for either.
        for message in (user_message, assistant):
            Message.feedback.related.set_cached_value(message, None)
            message.cited = []
    return Turn(
        agent=agent,
        title_from=branch[0].content if needs_title and branch else "",
        tenant_id=conversation.tenant_id,
        conversation_id=conversation.id,
        user_message_id=user_message.id,
        message_id=assistant.id,
        engine_name=agent.engine,
        context=context,
        record=record,
        base_input_tokens=base_tokens[0],
        base_output_tokens=base_tokens[1],
        started_at=started_at,
        rows=None if request.continue_ else TurnRows(conversation, user_message, assistant),
    )


def turn_start_or_conflict(*, ref: ConversationRef, request: TurnRequest) -> Turn:
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
        # A query of its own, after the failed turn: it sees the reply that turn collided with.
        running = Message.objects.filter(
            tenant_id=ref.tenant_id, conversation_id=ref.conversation_id, status=MessageStatus.IN_PROGRESS
        ).first()
        if running is not None and not message_sweep_if_stale(running):
            raise Conflict(RUNNING, details={"message_id": running.id})
    raise Conflict(RUNNING)


def _assistant(conversation: Conversation, *, parent: Message, now) -> Message:
    return Message(
        tenant_id=conversation.tenant_id,
        conversation=conversation,
        parent=parent,
        role=Role.ASSISTANT,
        status=MessageStatus.IN_PROGRESS,
        created_at=now,
        heartbeat_at=now,
    )


def _message_event(message_id: str, user_message_id: str, conversation_id: str) -> dict[str, Any]:
    return {"message": {"id": message_id, "user_message_id": user_message_id, "conversation_id": conversation_id}}


# --- running a generation ----------------------------------------------------------------------

# Generations running in this process, so that a cancel arriving here stops them at once.
_running: dict[str, tuple[asyncio.Task, Turn]] = {}


async def turn_launch(*, ref: ConversationRef, request: TurnRequest) -> tuple[Turn, asyncio.Task]:
    """Start a turn and its generation as one unit that runs to its end even if the request is cancelled
    (its client went away) meanwhile: a committed turn always gets its generation. With
    `on_disconnect: "cancel"`, a request cancelled here cancels the generation once it exists."""

    async def launch() -> tuple[Turn, asyncio.Task]:
        turn = await in_worker(turn_start_or_conflict)(ref=ref, request=request)
        return turn, await generation_start(turn)

    launching = asyncio.ensure_future(launch())
    try:
        return await asyncio.shield(launching)
    except asyncio.CancelledError:
        launching.add_done_callback(functools.partial(_launched_for_nobody, cancel=request.on_disconnect == "cancel"))
        raise


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


async def generation_start(turn: Turn) -> asyncio.Task:
    """Open the message's live log with its first events, then run the generation in its own task."""
    log = stream_log()
    await log.reset(turn.message_id)
    for seq, event in rebuild_events(
        content=turn.record.content,
        thinking=turn.record.thinking,
        index=turn.record.index,
        extra=turn.record.extra,
        after=-1,
    ):
        await log.append(turn.message_id, seq, event)
    # A fresh context: nothing of the request (its thread-sensitive executor) is inherited.
    task = asyncio.get_running_loop().create_task(
        _generate(turn), name=f"generation {turn.message_id}", context=contextvars.Context()
    )
    _running[turn.message_id] = (task, turn)
    task.add_done_callback(lambda done: _forget(turn.message_id, done))
    return task


def _forget(message_id: str, task: asyncio.Task) -> None:
    # `continue` reuses the message id: only forget the entry if it is still this run's.
    if _running.get(message_id, (None,))[0] is task:
        del _running[message_id]


async def generation_cancel(message_id: str) -> None:
    """Ask the generation to stop, wherever it runs (this process directly, others via the stream log)."""
    await stream_log().request_cancel(message_id)
    task, turn = _running.get(message_id, (None, None))
    if task is not None and not task.done() and not turn.finishing:
        turn.cancel_requested = True
        if turn.generating:  # a task cancelled before its first step would never store its end
            task.cancel()


def _flush(message_id: str, snapshot: tuple[str, str, list, list]) -> None:
    content, thinking, index, extra = snapshot
    Message.objects.filter(pk=message_id, status=MessageStatus.IN_PROGRESS).update(
        content=content, thinking=thinking, stream_index=index, extra_events=extra, heartbeat_at=timezone.now()
    )


def _snapshot(record: StreamRecord) -> tuple[str, str, list, list]:
    # Taken on the event loop, so the stored index never points past the stored text.
    return record.content, record.thinking, list(record.index), list(record.extra)


@transaction.atomic
def _finish(
    turn: Turn, *, status: str, error: str, usage: list[int], citations: list[dict[str, Any]], title: str
) -> None:
    record = turn.record
    now = timezone.now()
    end = {
        "content": record.content,
        "thinking": record.thinking,
        "stream_index": record.index,
        "extra_events": record.extra,
        "status": status,
        "error": error,
        "input_tokens": turn.base_input_tokens + usage[0],
        "output_tokens": turn.base_output_tokens + usage[1],
        "completed_at": now,
        "heartbeat_at": None,
    }
    # Only a running message: the sweep may have failed it meanwhile (this process looked dead).
    stored = Message.objects.filter(pk=turn.message_id, status=MessageStatus.IN_PROGRESS).update(**end)
    if not stored:  # deleted with its conversation, or swept
        turn.rows = None
        return
    cited = _citations(turn, citations)
    if cited:  # a continued reply's numbers already stored are kept
        Citation.objects.bulk_create(cited, ignore_conflicts=True)
    conversations = Conversation.objects.filter(pk=turn.conversation_id)
    # A title fills an untitled conversation, never over a name someone gave it meanwhile.
    titled = title and conversations.filter(name="", title_source=TitleSource.PROPOSED).update(
        name=title, updated_at=now
    )
    if not titled:
        conversations.update(updated_at=now)
    usage_record(tenant_id=turn.tenant_id, requests=1, input_tokens=usage[0], output_tokens=usage[1])

    if turn.rows is not None:  # the same end on the turn's rows (again, if a failed commit is retried)
        assistant, conversation = turn.rows.assistant, turn.rows.conversation
        for name, value in end.items():
            setattr(assistant, name, value)
        assistant.cited = cited
        conversation.updated_at = now
        if titled:
            conversation.name = title


def _citations(turn: Turn, items: list[dict[str, Any]]) -> list[Citation]:
    """The engine's citations as rows, by number, the first of each number."""
    rows: dict[int, Citation] = {}
    for item in items:
        if item["number"] in rows:
            continue
        rows[item["number"]] = Citation(
            tenant_id=turn.tenant_id,
            message_id=turn.message_id,
            number=item["number"],
            source_id=item.get("source_id", ""),
            source_name=(item.get("source_name") or "")[:255],
            url=item.get("url") or "",
            page=item.get("page"),
            snippet=item.get("snippet") or "",
            relevance_score=item.get("relevance_score") or 0,
            quality_score=item.get("quality_score") or 0,
        )
    return [rows[number] for number in sorted(rows)]


async def _tend(turn: Turn, task: asyncio.Task) -> None:
    """Beside the engine: stop it when a cancel is requested (from any process), flush partial content
    GENERATION_FLUSH_SECONDS after the previous write was stored, and keep the heartbeat fresh while the
    engine is silent. Counted from when a write ended, not began: when the database (or the worker
    threads) answer slower than the interval, a generation still waits between two flushes, instead of
    queueing one after another and slowing every other query further."""
    log = stream_log()
    flushed_seq, last_write = turn.record.next_seq, time.monotonic()
    while True:
        pause = CANCEL_POLL_SECONDS
        if turn.record.next_seq != flushed_seq:  # woken in time for the flush: never more than the interval apart
            pause = min(pause, max(0.0, last_write + settings.GENERATION_FLUSH_SECONDS - time.monotonic()))
        await asyncio.sleep(pause)
        try:
            if await log.is_cancel_requested(turn.message_id, since=turn.started_at) and not turn.finishing:
                turn.cancel_requested = True
                task.cancel()
                return
            now = time.monotonic()
            if turn.record.next_seq != flushed_seq and now - last_write >= settings.GENERATION_FLUSH_SECONDS:
                seq = turn.record.next_seq
                await in_worker(_flush)(turn.message_id, _snapshot(turn.record))
                flushed_seq, last_write = seq, time.monotonic()
            elif now - last_write >= HEARTBEAT_SECONDS:
                running = Message.objects.filter(pk=turn.message_id, status=MessageStatus.IN_PROGRESS)
                await in_worker(running.update)(heartbeat_at=timezone.now())
                last_write = time.monotonic()
        except Exception:  # a database or Redis blip: keep tending; the end is stored with retries
            logger.warning("Tending generation %s failed", turn.message_id, exc_info=True)
            await asyncio.sleep(CANCEL_POLL_SECONDS)


async def _generate(turn: Turn) -> str:
    log = stream_log()
    record = turn.record
    usage = [0, 0]
    citations: list[dict[str, Any]] = []
    status, error = MessageStatus.COMPLETED, ""
    turn.generating = True
    tender = asyncio.create_task(_tend(turn, asyncio.current_task()))
    try:
        # Cancelled between its commit and this first step: here, or from anywhere through the log.
        if not turn.cancel_requested and await log.is_cancel_requested(turn.message_id, since=turn.started_at):
            turn.cancel_requested = True
        if turn.cancel_requested:
            raise asyncio.CancelledError
        async with contextlib.aclosing(engine_for(turn.engine_name).run(turn.context)) as events:
            async for event in events:
                if isinstance(event, Usage):
                    usage[0] += event.input_tokens
                    usage[1] += event.output_tokens
                    continue
                if isinstance(event, Citations):
                    citations.extend(event.items)
                payload = wire_event(event)
                if payload is not None:
                    seq = record.add(payload)
                    await log.append(turn.message_id, seq, payload)
    except asyncio.CancelledError:
        if not turn.cancel_requested:
            status, error = MessageStatus.FAILED, INTERRUPTED  # the server is shutting down
        else:
            status = MessageStatus.CANCELLED
    except EngineFailure as exc:
        status, error = MessageStatus.FAILED, str(exc) or "The engine failed."
    except Exception:
        logger.exception("Generation %s failed", turn.message_id)
        status, error = MessageStatus.FAILED, "The engine failed unexpectedly."
    finally:
        turn.finishing = True
        tender.cancel()

    # Store first, then publish the end, so that a client that sees `done` finds the message stored.
    final = [{"error": error}]
    if status != MessageStatus.FAILED:
        final = [{"tokens": usage[0] + usage[1]}, {"done": True, "status": status}]
    final = [(record.add(event), event) for event in final]
    # A title that needs no model is stored with the reply; a model's is asked for after the stream ends.
    title = None
    if turn.title_from and status == MessageStatus.COMPLETED:
        title = title_without_model(agent=turn.agent, first_message=turn.title_from)
    outcome = {"status": status, "error": error, "usage": usage, "citations": citations, "title": title or ""}
    if not await _store_final(turn, **outcome):
        # Not stored (the database is unreachable): still end the stream, so no client waits forever;
        # the sweep fails the message once its heartbeat is stale.
        final = [(final[0][0], {"error": "The reply could not be stored."})]
    try:
        for seq, event in final:
            await log.append(turn.message_id, seq, event)
    except Exception:  # the log's store failed: followers finish from the stored message
        logger.exception("Publishing the end of generation %s failed", turn.message_id)
    if turn.title_from and status == MessageStatus.COMPLETED and title is None:
        try:
            await _title_conversation(turn)
        except Exception:  # the reply is stored and ended: a title that could not be saved stays unset
            logger.exception("Titling conversation %s failed", turn.conversation_id)
    return status


async def _store_final(turn: Turn, **outcome) -> bool:
    for attempt in range(FINISH_ATTEMPTS):
        try:
            await in_worker(_finish)(turn, **outcome)
            return True
        except DatabaseErrors:
            logger.exception("Storing the end of generation %s failed (attempt %d)", turn.message_id, attempt + 1)
            await asyncio.sleep(0.5 * (attempt + 1))
    turn.rows = None  # they may hold an end that was never committed
    return False


async def _title_conversation(turn: Turn) -> None:
    """Give an untitled conversation a proposed title after its first reply (never over a user's)."""
    try:
        title = await title_propose(agent=turn.agent, first_message=turn.title_from)
    except EngineFailure:
        title = title_from_keywords(turn.title_from)
    untitled = Conversation.objects.filter(pk=turn.conversation_id, name="", title_source=TitleSource.PROPOSED)
    if await in_worker(untitled.update)(name=title) and turn.rows is not None:
        turn.rows.conversation.name = title
