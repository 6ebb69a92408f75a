"""The wire events of a generation (DESIGN.md section 4) and their record kept with the message.

`Message.stream_index` holds one [seq, kind, start, end] per event: for `content` and `thinking` the
slice of the stored text the delta was, for every other kind an index into `Message.extra_events`.
That is enough to rebuild any suffix of the stream exactly after the live log has expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents.engines import (
    Citations,
    Content,
    DataFrameProduced,
    Event,
    FileProduced,
    Thinking,
    ToolCallEnded,
    ToolCallStarted,
)

TEXT_KINDS = ("content", "thinking")
END_KINDS = ("done", "error")

Entry = tuple[int, dict[str, Any]]  # (seq, event)


def is_terminal(event: dict[str, Any]) -> bool:
    return any(kind in event for kind in END_KINDS)


def wire_event(event: Event) -> dict[str, Any] | None:
    """The SSE payload of an engine event (usage is summed and sent once, as `tokens`, at the end)."""
    if isinstance(event, Content):
        return {"content": event.text}
    if isinstance(event, Thinking):
        return {"thinking": event.text}
    if isinstance(event, Citations):
        return {"citations": event.items}
    if isinstance(event, DataFrameProduced):
        return {"data_frame": {"name": event.name, "rows": event.rows, "columns": event.columns}}
    if isinstance(event, FileProduced):
        return {"file": {"file_ref": event.file_ref, "name": event.name}}
    if isinstance(event, ToolCallStarted):
        return {"tool_call": {"id": event.id, "name": event.name, "arguments": event.arguments}}
    if isinstance(event, ToolCallEnded):
        return {
            "tool_result": {
                "id": event.id,
                "status": event.status,
                "content": event.content,
                "content_type": event.content_type,
            }
        }
    return None


NUL_REPLACED = "The reply held NUL characters, which cannot be stored; each was replaced with U+FFFD."


def storable(payload: Any) -> tuple[Any, bool]:
    """The event with each NUL character (PostgreSQL stores none, in text or jsonb) replaced by U+FFFD, so
    that what is streamed is what can be stored; and whether there was one. An engine's text (a model's,
    a SQL result's) may hold them."""
    if isinstance(payload, str):
        return (payload.replace("\x00", "\ufffd"), True) if "\x00" in payload else (payload, False)
    if isinstance(payload, dict):
        items = [(storable(key), storable(value)) for key, value in payload.items()]
        if not any(key[1] or value[1] for key, value in items):
            return payload, False
        return {key[0]: value[0] for key, value in items}, True
    if isinstance(payload, (list, tuple)):
        items = [storable(item) for item in payload]
        if not any(replaced for _, replaced in items):
            return payload, False
        return [item for item, _ in items], True
    return payload, False


@dataclass(frozen=True)
class StreamSnapshot:
    """A stream record at one moment: what is stored with the message (its index, text and other events)."""

    content: str
    thinking: str
    index: tuple
    extra: tuple
    first_seq: int = 0


class StreamRecord:
    """Builds a message's content, thinking and stream index as events are published."""

    @classmethod
    def of(cls, snapshot: StreamSnapshot) -> StreamRecord:
        return cls(
            content=snapshot.content,
            thinking=snapshot.thinking,
            index=snapshot.index,
            extra=snapshot.extra,
            first_seq=snapshot.first_seq,
        )

    def snapshot(self) -> StreamSnapshot:
        return StreamSnapshot(self.content, self.thinking, tuple(self.index), tuple(self.extra), self.first_seq)

    def __init__(self, *, content: str = "", thinking: str = "", index=None, extra=None, first_seq: int = 0) -> None:
        self.first_seq = first_seq  # the lowest seq the next event may have
        self.content_parts = [content] if content else []
        self.content_length = len(content)
        self.thinking_parts = [thinking] if thinking else []
        self.thinking_length = len(thinking)
        self.index: list[list] = list(index or [])
        self.extra: list[dict[str, Any]] = list(extra or [])

    @property
    def next_seq(self) -> int:
        return max(self.index[-1][0] + 1 if self.index else 0, self.first_seq)

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    @property
    def thinking(self) -> str:
        return "".join(self.thinking_parts)

    def add(self, event: dict[str, Any], *, seq: int | None = None) -> int:
        """Record the next event, at `seq` if given (at least next_seq: numbers may skip, never repeat)."""
        seq = self.next_seq if seq is None else max(seq, self.next_seq)
        if "content" in event:
            text = event["content"]
            self.content_parts.append(text)
            self.index.append([seq, "content", self.content_length, self.content_length + len(text)])
            self.content_length += len(text)
        elif "thinking" in event:
            text = event["thinking"]
            self.thinking_parts.append(text)
            self.index.append([seq, "thinking", self.thinking_length, self.thinking_length + len(text)])
            self.thinking_length += len(text)
        else:
            self.index.append([seq, next(iter(event)), len(self.extra), 0])
            self.extra.append(event)
        return seq


def rebuild_events(*, content: str, thinking: str, index: list, extra: list, after: int) -> list[tuple[int, dict]]:
    """The stored stream's events with seq > after."""
    events = []
    for seq, kind, start, end in index:
        if seq <= after:
            continue
        if kind == "content":
            events.append((seq, {"content": content[start:end]}))
        elif kind == "thinking":
            events.append((seq, {"thinking": thinking[start:end]}))
        else:
            events.append((seq, extra[start]))
    return events
