"""The engine interface: `Engine.run(context)` is an async iterator of typed events.

Every engine failure (timeouts, provider errors, broken streams) is raised as `EngineFailure`; the runtime
turns it into an `error` event and a `failed` message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Thinking:
    text: str


@dataclass(frozen=True)
class Content:
    text: str


@dataclass(frozen=True)
class Citations:
    """Numbered sources; each item: number, source_id, source_name, url, page, snippet, relevance_score,
    quality_score. The runtime stores them as Citation rows."""

    items: list[dict[str, Any]]


@dataclass(frozen=True)
class DataFrameProduced:
    name: str
    rows: int
    columns: list[str]


@dataclass(frozen=True)
class FileProduced:
    file_ref: str
    name: str


@dataclass(frozen=True)
class ToolCallStarted:
    """The engine decided to call a tool. `id` is unique within the reply; `arguments` as decided (a JSON
    object, or the text the model wrote when it is not one)."""

    id: str
    name: str
    arguments: Any


TOOL_CONTENT_TYPES = ("text", "json", "image", "file")


@dataclass(frozen=True)
class ToolCallEnded:
    """A tool call's result, as the model got it: `status` "ok" or "error" (the model reads the error and
    goes on); `content` a text, a JSON value, or for an image or document a reference to a file of the
    conversation ({"file_ref", "name", "content_type"}); `content_type` says which (TOOL_CONTENT_TYPES)."""

    id: str
    status: str
    content: Any
    content_type: str = "text"


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Finished:
    """Why the model stopped: "stop" (it was done) or "length" (its token limit cut the reply, which
    `continue` can extend). Engines that cannot tell send none (the reply counts as "stop")."""

    reason: str


Event = (
    Thinking
    | Content
    | Citations
    | DataFrameProduced
    | FileProduced
    | ToolCallStarted
    | ToolCallEnded
    | Usage
    | Finished
)


class EngineFailure(Exception):
    """The engine could not produce (the rest of) a reply."""


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass
class TurnContext:
    """What an engine gets for one turn."""

    tenant_id: str
    conversation_id: str | None  # None for the stateless /v1 API
    message_id: str | None  # the assistant message being written
    system_prompt: str
    history: list[ChatMessage]  # oldest first; the last one is the user's new message
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    attachments: list[str] = field(default_factory=list)  # file refs of the new message
    reasoning: bool = False
    continue_from: str = ""  # with `continue`: the assistant content to extend
    # A reply whose process died, taken over by another: `continue_from` and `continued_thinking` are what
    # it streamed, and the engine gives the rest of the same reply (the builtin one exactly the rest).
    resumed: bool = False
    continued_thinking: str = ""
    continued_events: int = 0  # and how many of its other events (citations, data frames...)
    # Whether the conversation has files with passages, when the caller knows (None: look it up).
    has_indexed_files: bool | None = None

    @property
    def question(self) -> str:
        return next((m.content for m in reversed(self.history) if m.role == "user"), "")


class Engine(Protocol):
    def run(self, context: TurnContext) -> AsyncIterator[Event]: ...


@dataclass
class BuiltinAnswer:
    """What a mode of the builtin engine produces: the steps it really took, the reply, extra events (after
    the text), and the tool call it made (its ToolCallStarted and ToolCallEnded, before the text, as an
    LLM's calls are)."""

    steps: list[str]
    text: str
    events: list[Event] = field(default_factory=list)
    call: list[Event] = field(default_factory=list)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token), used for budgets and the builtin engine."""
    return max(1, (len(text) + 3) // 4) if text else 0
