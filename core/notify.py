"""Notices of what happens to a conversation, for the WebSocket clients subscribed to it, whichever server
process and whichever transport (REST, SSE, WebSocket) caused it: through the Channels layer (Redis
pub/sub with REDIS_URL, in memory otherwise), once the change is committed."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger(__name__)

NOTICE_TYPE = "conversation.notice"  # the consumer's handler: conversation_notice


def conversation_group(conversation_id: str) -> str:
    return f"conversation.{conversation_id}"


def conversation_notify(conversation_id: str, event: str, **fields) -> None:
    """Tell the conversation's subscribers `event` (`message.created`, `message.completed`,
    `conversation.updated`, `conversation.deleted`) with `fields`, once the current transaction commits.
    A notice that cannot be sent is logged: the change it tells of stands."""

    transaction.on_commit(lambda: async_to_sync(conversation_anotify)(conversation_id, event, **fields))


async def conversation_anotify(conversation_id: str, event: str, **fields) -> None:
    """conversation_notify from async code, at once (what it tells of is committed): no thread hop, which
    is most of a notice's cost on the hot path (a turn's start and end)."""
    layer = get_channel_layer()
    if layer is None:
        return
    notice = {"type": NOTICE_TYPE, "event": event, "conversation_id": conversation_id, **fields}
    try:
        await layer.group_send(conversation_group(conversation_id), notice)
    except Exception:
        logger.warning("Sending %s of %s failed", event, conversation_id, exc_info=True)
