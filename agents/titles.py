"""Conversation titles: the builtin engine takes the key words of the first question, the openai engine
asks the model with a short prompt. Either way a title is at most TITLE_MAX_CHARS."""

from __future__ import annotations

import re

import openai
from django.conf import settings

from agents.engines.base import EngineFailure
from agents.engines.openai import openai_client
from agents.models import Agent, Engine

TITLE_MAX_CHARS = 80
TITLE_WORDS = 6
FALLBACK_TITLE = "New conversation"
TITLE_PROMPT = (
    "Write a title of at most six words for a conversation that starts with the user's message below. "
    "Answer with the title only: no quotes, no final punctuation."
)
_STOP_WORDS_TEXT = """
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just let me more
most my myself no nor not now of off on once only or other our ours ourselves out over own please
same she should so some such than that the their theirs them themselves then there these they this
those through to too under until up very was we were what when where which while who whom why will
with would you your yours yourself yourselves hi hello hey thanks thank tell show give want need
know like
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
_WORD = re.compile(r"[^\W_][\w'’-]*")


def _capped(title: str) -> str:
    title = " ".join(title.split()).strip(" \"'.:;!?")
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return title or FALLBACK_TITLE


def title_from_keywords(text: str) -> str:
    """The first few significant words, in order, e.g. 'Summarize Q3 invoice totals per region'."""
    words = [w for w in _WORD.findall(text) if w.lower() not in STOP_WORDS]
    if not words:
        return FALLBACK_TITLE
    title = " ".join(words[:TITLE_WORDS])
    return _capped(title[0].upper() + title[1:])


def title_without_model(*, agent: Agent, first_message: str) -> str | None:
    """The title of an agent whose engine asks no model for one (the builtin's key words); else None."""
    return title_from_keywords(first_message) if agent.engine != Engine.OPENAI else None


async def title_propose(*, agent: Agent, first_message: str) -> str:
    """A title for a conversation starting with `first_message`; raises EngineFailure for the openai
    engine when the model cannot be reached."""
    title = title_without_model(agent=agent, first_message=first_message)
    if title is not None:
        return title
    try:
        client = openai_client()
        stream = await client.chat.completions.create(
            model=agent.model or settings.DEFAULT_MODEL,
            messages=[
                {"role": "system", "content": TITLE_PROMPT},
                {"role": "user", "content": first_message[:2000]},
            ],
            max_tokens=24,
            stream=True,
        )
        parts = []
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
    except (openai.OpenAIError, ValueError) as exc:
        raise EngineFailure("The model could not propose a title.") from exc
    return _capped("".join(parts))
