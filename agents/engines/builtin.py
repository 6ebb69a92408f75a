"""The builtin engine: offline and deterministic. It answers with SQL over the conversation's data, from its
files, or plainly, in that order of preference (each mode is a function of its own app)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from agents.engines.base import (
    BuiltinAnswer,
    Content,
    Event,
    Thinking,
    TurnContext,
    Usage,
    estimate_tokens,
)
from core.db import in_worker

CONFIGURE_HINT = (
    "For open-ended conversation, configure an OpenAI-compatible engine: the operator sets OPENAI_BASE_URL "
    'and OPENAI_API_KEY, and the agent gets `"engine": "openai"` with a `model`.'
)


@dataclass(frozen=True)
class BuiltinMode:
    """A way the builtin engine answers from a conversation's data (its apps register theirs)."""

    label: str
    may_apply: Callable[[TurnContext], bool]  # cheap and without the database: False means surely not
    answer: Callable[[TurnContext], BuiltinAnswer | None]  # None when it does not apply (may query)
    not_applicable: str  # what it means when it does not apply, for the reasoning steps


# The data modes, tried in the order they were registered (most specific first).
_modes: list[BuiltinMode] = []


def builtin_modes_register(*modes: BuiltinMode) -> None:
    _modes.extend(mode for mode in modes if mode not in _modes)


def plain_answer(context: TurnContext) -> BuiltinAnswer:
    question = " ".join(context.question.split())
    quoted = question if len(question) <= 200 else question[:197] + "..."
    if context.continue_from:
        # Said once: the plain answer ends with the hint already.
        more = "" if CONFIGURE_HINT in context.continue_from else ": " + CONFIGURE_HINT
        return BuiltinAnswer(steps=["Continuing the previous answer."], text=" Nothing more to add from here" + more)
    text = (
        f'You wrote: "{quoted}"\n\n'
        "I am Parley's builtin assistant. I answer from this conversation's files (upload some and ask "
        "about them) and run SQL over its data (send a ```sql block, or a message starting with SELECT or "
        f"WITH). {CONFIGURE_HINT}"
    )
    return BuiltinAnswer(steps=["Answering plainly."], text=text)


_CHUNK = re.compile(r"\S+\s*|\s+")


def chunks(text: str) -> list[str]:
    """Words with their trailing whitespace: concatenated they give back `text` exactly."""
    return _CHUNK.findall(text)


def _queries_database(context: TurnContext) -> bool:
    return not context.continue_from and any(mode.may_apply(context) for mode in _modes)


def answer_for(context: TurnContext) -> tuple[list[str], BuiltinAnswer]:
    """The first data mode's answer, else the plain one; with the steps of the modes that did not apply.
    In a worker thread when `_queries_database(context)`."""
    steps: list[str] = []
    if not context.continue_from:
        for mode in _modes:
            answer = mode.answer(context) if mode.may_apply(context) else None
            if answer is not None:
                return steps, answer
            steps.append(f"No {mode.label} mode: {mode.not_applicable}.")
    return steps, plain_answer(context)


def _rest(pieces: list[str], streamed: str) -> list[str] | None:
    """The pieces after those that make up `streamed`, or None when they do not start with it."""
    done = 0
    for position, piece in enumerate(pieces):
        if done == len(streamed):
            return pieces[position:]
        if not streamed.startswith(piece, done):
            return None
        done += len(piece)
    return [] if done == len(streamed) else None


class BuiltinEngine:
    async def run(self, context: TurnContext) -> AsyncIterator[Event]:
        delay = context.options.get("chunk_delay_ms", 0) / 1000
        # A resumed reply is answered as the uninterrupted one was, then what it streamed is skipped; an
        # answer that no longer starts with it (the conversation's data changed) is continued instead.
        fresh = dataclasses.replace(context, continue_from="", continued_thinking="") if context.resumed else context
        if _queries_database(fresh):
            steps, answer = await in_worker(answer_for)(fresh)
        else:  # a plain answer: no thread, no query, and the reply starts at once
            steps, answer = answer_for(fresh)
        thinking = [step + "\n" for step in [*steps, *answer.steps]] if context.reasoning else []
        pieces, call, events = chunks(answer.text), answer.call, answer.events
        if context.resumed:
            thinking, pieces = _rest(thinking, context.continued_thinking), _rest(pieces, context.continue_from)
            if thinking is None or pieces is None:
                _, answer = answer_for(context)
                thinking, pieces, call, events = [], chunks(answer.text), [], answer.events
            else:  # the call's events were streamed first, then the others
                done = context.continued_events
                call, events = call[done:], events[max(0, done - len(call)) :]
        for step in thinking:
            yield Thinking(step)
        for event in call:
            yield event
        # Paced like a model streaming from elsewhere: chunk n is due `n * delay` after the first. After a
        # late wake-up of this process, the chunks due meanwhile come at once, as they would have waited
        # in a socket's buffer, not one per turn of the event loop.
        loop = asyncio.get_running_loop()
        due = loop.time()
        for piece in pieces:
            if delay:
                due += delay
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
            yield Content(piece)
        for event in events:
            yield event
        prompt_tokens = estimate_tokens(context.system_prompt) + sum(
            estimate_tokens(m.content) for m in context.history
        )
        yield Usage(input_tokens=prompt_tokens, output_tokens=estimate_tokens(answer.text))
