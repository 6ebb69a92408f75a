"""Following a generation's events: from the live log while it has one, else rebuilt from the stored
message (exactly: see turns.events), polling its flushes while it still runs elsewhere."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from django.conf import settings

from conversations.models import Message, MessageStatus
from turns.events import Entry, is_terminal, rebuild_events
from turns.log import stream_log

logger = logging.getLogger(__name__)

STORED_POLL_SECONDS = 0.5
# A quiet live log is checked against the stored message this often: a reply settled elsewhere (its process
# died and the sweep failed it, or another process took it over) reaches its followers within this.
SETTLED_CHECK_SECONDS = 2.0


async def message_events(
    message_id: str, *, after: int = -1, stop: Callable[[], bool] = lambda: False
) -> AsyncIterator[list[Entry]]:
    """The events after `after`, in batches (one per read of the log), ending with the terminal event, or
    early once `stop()` is true (it is asked after every read, at least every SETTLED_CHECK_SECONDS).
    An empty batch means "nothing for a while": the writer sends a keep-alive comment."""
    log = stream_log()
    loop = asyncio.get_running_loop()
    last, quiet_since = after, loop.time()
    waiting = False  # the first read never blocks: a log that has ended (or is missing) answers at once
    while True:
        waited, waiting = waiting, True
        timeout = min(settings.STREAM_KEEPALIVE_SECONDS, SETTLED_CHECK_SECONDS)
        try:
            found = await log.read(message_id, last, timeout=timeout, wait=waited)
        except Exception:  # the log's store failed (Redis timeout, restart): the stored message still serves
            logger.warning("Reading the live log of %s failed; following the stored message", message_id, exc_info=True)
            found = None
        if found is not None:
            entries, ended = found
            batch = _through_terminal(entries)
            if batch:
                last, quiet_since = batch[-1][0], loop.time()
                yield batch
                if is_terminal(batch[-1][1]):
                    return
            if ended or stop():
                return
            if batch or not waited:
                continue
            # Nothing new for a while. A log can stop short of its end (its process died, or the sweep
            # failed the reply): the stored message is the authority once it no longer runs.
            if not await _running(message_id):
                yield await _stored_events(message_id, after=last)
                return
            if loop.time() - quiet_since >= settings.STREAM_KEEPALIVE_SECONDS:
                quiet_since = loop.time()
                yield []
            continue
        # Running in a process whose log we cannot see (no REDIS_URL): follow what it flushes. Whether it
        # still runs is asked first, so that the read after it holds the end if it has ended.
        running = await _running(message_id)
        batch = await _stored_events(message_id, after=last)
        if batch:
            last, quiet_since = batch[-1][0], loop.time()
            yield batch
        if not running or stop():
            return
        if loop.time() - quiet_since >= settings.STREAM_KEEPALIVE_SECONDS:
            quiet_since = loop.time()
            yield []
        await asyncio.sleep(STORED_POLL_SECONDS)


def _through_terminal(entries: list[Entry]) -> list[Entry]:
    for position, (_, event) in enumerate(entries):
        if is_terminal(event):
            return entries[: position + 1]
    return entries


async def _running(message_id: str) -> bool:
    return await Message.objects.filter(pk=message_id, status=MessageStatus.IN_PROGRESS).aexists()


async def _stored_events(message_id: str, *, after: int) -> list[Entry]:
    """The stored message's events after `after` (rebuilt from its stream index)."""
    try:
        message = await Message.objects.only("content", "thinking", "stream_index", "extra_events").aget(pk=message_id)
    except Message.DoesNotExist:  # deleted with its conversation while followed
        return [(after + 1, {"error": "The message was deleted."})]
    return rebuild_events(
        content=message.content,
        thinking=message.thinking,
        index=message.stream_index,
        extra=message.extra_events,
        after=after,
    )
