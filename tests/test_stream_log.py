"""The Redis stream log against a real Redis: what readers in any process rely on."""

import os

import pytest
import redis.asyncio as redis
from django.test import override_settings

from turns.log.redis import RedisLog, stream_key

REDIS_URL = os.environ.get("REDIS_URL", "")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="the Redis stream log needs REDIS_URL (set by .ci/run)")


@pytest.fixture
async def log():
    with override_settings(REDIS_URL=REDIS_URL, STREAM_LOG_TTL_SECONDS=30):
        yield RedisLog(REDIS_URL)


async def entries(message_id: str) -> tuple[list[tuple[bytes, dict]], int]:
    """The log's entries in Redis and its TTL."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return await client.xrange(stream_key(message_id)), await client.ttl(stream_key(message_id))
    finally:
        await client.aclose()


async def test_events_are_appended_once_in_order_with_a_ttl(log):
    message_id = f"msg_test_{os.getpid()}_once"
    await log.reset(message_id)
    await log.append(message_id, 0, {"content": "a"})
    await log.append(message_id, 1, {"content": "b"})
    await log.append(message_id, 1, {"content": "b"})  # sent again (a pipeline retried after a drop)
    await log.append(message_id, 0, {"content": "a"})
    found, ttl = await entries(message_id)
    assert [(entry_id, fields[b"e"]) for entry_id, fields in found] == [
        (b"0-1", b'{"content": "a"}'),
        (b"0-2", b'{"content": "b"}'),
    ]
    assert ttl > 30  # a running log lives long; its end shortens it
    await log.append(message_id, 2, {"done": True, "message": {"status": "completed"}})
    found, ttl = await entries(message_id)
    assert len(found) == 3 and 0 < ttl <= 30
    read, ended = await log.read(message_id, 0, timeout=1)
    assert read == [(1, {"content": "b"}), (2, {"done": True, "message": {"status": "completed"}})] and ended
    await log.reset(message_id)
    assert (await entries(message_id))[0] == []


async def test_a_write_redis_refuses_fails_its_caller_only(log):
    message_id = f"msg_test_{os.getpid()}_wrongtype"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.set(stream_key(message_id), "not a stream", ex=30)
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await log.append(message_id, 0, {"content": "a"})
        other = f"msg_test_{os.getpid()}_fine"
        await log.reset(other)
        await log.append(other, 0, {"content": "fine"})
        assert len((await entries(other))[0]) == 1
    finally:
        await client.delete(stream_key(message_id), stream_key(f"msg_test_{os.getpid()}_fine"))
        await client.aclose()
