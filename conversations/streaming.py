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
            if not entries:
                yield None
            continue
        message = await Message.objects.only("content", "thinking", "stream_index", "extra_events", "status").aget(
            pk=message_id
        )
        for seq, event in rebuild_events(
            content=message.content,
            thinking=message.thinking,
            index=message.stream_index,
            extra=message.extra_events,
            after=last,
        ):
            last = seq
            yield seq, event
        await release_connection()
        if message.status != MessageStatus.IN_PROGRESS:
            return
        # Running in a process whose log we cannot see (no REDIS_URL): follow what it flushes.
        await asyncio.sleep(STORED_POLL_SECONDS)
