"""Following a generation's events: from the live log while it has one, else rebuilt from the stored
message (exactly: see conversations.events), polling its flushes while it still runs elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from conversations.events import rebuild_events
from conversations.models import Message, MessageStatus
from conversations.streams import is_terminal, streams
from core.db import release_connection

STORED_POLL_SECONDS = 0.5

# None in the stream means "nothing for a while": the writer sends a keep-alive comment.
Item = tuple[int, dict[str, Any]] | None


async def message_events(message_id: str, *, after: int = -1) -> AsyncIterator[Item]:
    log = streams()
    last = after
    while True:
        found = await log.read(message_id, last, timeout=settings.STREAM_KEEPALIVE_SECONDS)
        if found is not None:
            entries, ended = found
            for seq, event in entries:
                last = seq
                yield seq, event
                if is_terminal(event):
                    return
            if ended:
                return
            if entries:
                continue
            # Nothing new for a while. A log can stop short of its end (its process died, or the sweep
            # failed the reply): the stored message is the authority once it no longer runs.
            if not await _running(message_id):
                async for item in _stored_events(message_id, after=last):
                    yield item
                return
            yield None
            continue
        async for item in _stored_events(message_id, after=last):
            last = item[0]
            yield item
        if not await _running(message_id):
            return
        # Running in a process whose log we cannot see (no REDIS_URL): follow what it flushes.
        await asyncio.sleep(STORED_POLL_SECONDS)


async def _running(message_id: str) -> bool:
    running = await Message.objects.filter(pk=message_id, status=MessageStatus.IN_PROGRESS).aexists()
    await release_connection()
    return running


async def _stored_events(message_id: str, *, after: int) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """The stored message's events after `after` (rebuilt from its stream index)."""
    message = await Message.objects.only("content", "thinking", "stream_index", "extra_events").aget(pk=message_id)
    await release_connection()
    for item in rebuild_events(
        content=message.content,
        thinking=message.thinking,
        index=message.stream_index,
        extra=message.extra_events,
        after=after,
    ):
        yield item
