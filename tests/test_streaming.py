"""SSE streams over real server processes (uvicorn, as deployed): protocol, resume, join, cancel, failures."""

import asyncio
import io
import json
import os
import random
import socket
import threading
import time

import httpx
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from conversations.models import Message
from tests.conftest import reply_in_progress, wait_until
from tests.openai_server import OpenAIServer
from tests.servers import free_port, parse_sse, served

# The servers read what the test writes, so rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

REDIS_URL = os.environ.get("REDIS_URL", "")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="cross-process streams need REDIS_URL (set by .ci/run)")
LONG_QUESTION = " ".join("abcdefghij"[i % 10] for i in range(95))  # ~100 one-word chunks in the reply


@pytest.fixture(scope="module")
def server(django_db_blocker):
    with django_db_blocker.unblock(), served(REDIS_URL="", STREAM_KEEPALIVE_SECONDS="0.3") as url:
        yield url


def headers(ctx, **extra) -> dict:
    return {"Authorization": f"Bearer {ctx.secret}", **extra}


def slow(ctx, delay_ms: int = 20) -> None:
    ctx.agent.options = {"chunk_delay_ms": delay_ms}
    ctx.agent.save()


def stream_url(base: str, ctx, conversation) -> str:
    return f"{base}{ctx.conversation_url(conversation)}/stream"


def join_url(base: str, ctx, conversation, message_id: str) -> str:
    return f"{base}{ctx.conversation_url(conversation)}/messages/{message_id}/stream"


def read_all(method: str, url: str, **kwargs) -> tuple[httpx.Response, list[dict]]:
    with httpx.stream(method, url, timeout=30, **kwargs) as response:
        raw = b"".join(response.iter_bytes())
    return response, parse_sse(raw) if response.status_code == 200 else []


def events_only(entries: list[dict]) -> list[dict]:
    return [entry for entry in entries if "data" in entry]


def complete_events(chunks: list[bytes]) -> list[dict]:
    """The entries of the complete SSE blocks received so far."""
    complete = b"".join(chunks).rpartition(b"\n\n")[0]
    return parse_sse(complete + b"\n\n")


def message_id_of(first_chunk: bytes) -> str:
    """The message id the stream's first event (`message`) announces."""
    return parse_sse(first_chunk.split(b"\n\n")[0] + b"\n\n")[0]["data"]["message"]["id"]


def content_of(events: list[dict]) -> str:
    return "".join(event["data"].get("content", "") for event in events)


def ended(message_id: str) -> Message | None:
    """The message once it is no longer in progress (for wait_until)."""
    return Message.objects.filter(id=message_id).exclude(status="in_progress").first()


@pytest.mark.slow
def test_the_stream_follows_the_protocol(server, owner):
    conversation = owner.conversation()
    response, entries = read_all(
        "POST",
        stream_url(server, owner, conversation),
        json={"content": "Check the protocol", "reasoning": True},
        headers=headers(owner, Accept="text/event-stream"),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    events = events_only(entries)
    message_id = events[0]["data"]["message"]["id"]
    assert [event["id"] for event in events] == [f"{message_id}:{seq}" for seq in range(len(events))]
    kinds = [next(iter(event["data"])) for event in events]
    assert kinds[0] == "message" and kinds[-2:] == ["tokens", "done"]
    # One thinking event per step (the SQL mode adds "no SQL query" before the plain answer), then content.
    first_content = kinds.index("content")
    assert kinds[1] == "thinking" and set(kinds[1:first_content]) == {"thinking"}
    assert set(kinds[first_content:-2]) == {"content"}
    assert events[-1]["data"] == {"done": True, "status": "completed"}

    stored = Message.objects.get(id=message_id)
    assert events[0]["data"]["message"] == {
        "id": message_id,
        "user_message_id": stored.parent_id,
        "conversation_id": conversation.id,
    }
    assert content_of(events) == stored.content and stored.status == "completed"
    assert events[-2]["data"]["tokens"] == stored.input_tokens + stored.output_tokens


@pytest.fixture(params=["in-process", pytest.param("redis", marks=needs_redis)])
def any_log_server(request, server, django_db_blocker):
    """The module's in-process-log server, and a server on Redis Streams when Redis is available."""
    if request.param == "in-process":
        yield server
        return
    with django_db_blocker.unblock(), served(REDIS_URL=REDIS_URL, STREAM_KEEPALIVE_SECONDS="0.3") as url:
        yield url


@pytest.mark.slow
def test_resuming_at_random_cut_points_loses_and_repeats_nothing(any_log_server, owner):
    server = any_log_server
    slow(owner, 25)
    conversation = owner.conversation()
    seen: list[dict] = []
    started = threading.Event()
    joiners: list[tuple[int, list[dict]]] = []

    def join_after(cut: int, message_id: str) -> None:
        _, entries = read_all(
            "GET",
            join_url(server, owner, conversation, message_id),
            headers=headers(owner, **{"Last-Event-ID": f"{message_id}:{cut}"}),
        )
        joiners.append((cut, events_only(entries)))

    threads = []
    live_cuts = sorted(random.sample(range(0, 60), 10))
    with httpx.stream(
        "POST",
        stream_url(server, owner, conversation),
        json={"content": LONG_QUESTION},
        headers=headers(owner),
        timeout=30,
    ) as response:
        buffer = b""
        for chunk in response.iter_bytes():
            buffer += chunk
            *complete, buffer = buffer.split(b"\n\n")
            for block in complete:
                entry = parse_sse(block + b"\n\n")[0]
                if "data" not in entry:
                    continue
                seen.append(entry)
                started.set()
                seq = len(seen) - 1
                if live_cuts and seq == live_cuts[0]:  # join while the generation is still running
                    live_cuts.pop(0)
                    message_id = seen[0]["data"]["message"]["id"]
                    threads.append(threading.Thread(target=join_after, args=(seq, message_id)))
                    threads[-1].start()
    for thread in threads:
        thread.join(30)
    assert seen[-1]["data"]["done"] is True
    message_id = seen[0]["data"]["message"]["id"]
    for cut in random.sample(range(-1, len(seen)), 10):  # and after the end
        join_after(cut, message_id)

    assert len(joiners) == 20
    for cut, events in joiners:
        assert events == seen[cut + 1 :], f"resume after {cut}"
    assert content_of(seen) == Message.objects.get(id=message_id).content


@pytest.mark.slow
def test_resuming_after_the_live_log_expired_rebuilds_it_exactly(owner, django_db_blocker):
    with django_db_blocker.unblock(), served(REDIS_URL="", STREAM_LOG_TTL_SECONDS="0") as base:
        conversation = owner.conversation()
        _, entries = read_all(
            "POST",
            stream_url(base, owner, conversation),
            json={"content": LONG_QUESTION, "reasoning": True},
            headers=headers(owner),
        )
        seen = events_only(entries)
        message_id = seen[0]["data"]["message"]["id"]
        for cut in [-1, 0, 1, 2, 7, len(seen) // 2, len(seen) - 3, len(seen) - 2, len(seen) - 1]:
            _, again = read_all(
                "GET", join_url(base, owner, conversation, message_id), params={"after": cut}, headers=headers(owner)
            )
            assert events_only(again) == seen[cut + 1 :], f"resume after {cut}"


@pytest.mark.slow
def test_keep_alive_comments_flow_while_the_engine_is_silent(server, owner):
    slow(owner, 700)
    conversation = owner.conversation()
    with httpx.stream(
        "POST", stream_url(server, owner, conversation), json={"content": "x"}, headers=headers(owner), timeout=30
    ) as response:
        raw = b""
        for chunk in response.iter_bytes():
            raw += chunk
            if b": keep-alive" in raw:
                break
    assert b": keep-alive\n\n" in raw


@pytest.mark.slow
def test_after_a_disconnect_the_reply_completes_and_is_stored(server, owner):
    slow(owner, 20)
    conversation = owner.conversation()
    with httpx.stream(
        "POST",
        stream_url(server, owner, conversation),
        json={"content": "keep going"},
        headers=headers(owner),
        timeout=30,
    ) as response:
        first = next(response.iter_bytes())
    message_id = message_id_of(first)
    message = wait_until(lambda: ended(message_id), timeout=15, interval=0.1, what="the reply to end")
    assert message.status == "completed"
    assert 'You wrote: "keep going"' in message.content


@pytest.mark.slow
def test_on_disconnect_cancel_stops_the_engine_within_two_seconds(server, owner):
    slow(owner, 100)  # about 6 s of reply
    conversation = owner.conversation()
    with httpx.stream(
        "POST",
        stream_url(server, owner, conversation),
        json={"content": "stop when I leave", "on_disconnect": "cancel"},
        headers=headers(owner),
        timeout=30,
    ) as response:
        first = next(response.iter_bytes())
    left_at = time.monotonic()
    message_id = message_id_of(first)
    # Stopped within 2 s of the disconnect, or the test fails.
    message = wait_until(lambda: ended(message_id), timeout=2, since=left_at, what="the engine to stop")
    assert message.status == "cancelled"
    assert len(message.content) < len('You wrote: "stop when I leave"') + 100


@pytest.mark.slow
def test_partial_content_is_flushed_while_running(server, owner):
    slow(owner, 60)
    conversation = owner.conversation()
    with httpx.stream(
        "POST",
        stream_url(server, owner, conversation),
        json={"content": LONG_QUESTION},
        headers=headers(owner),
        timeout=30,
    ) as response:
        iterator = response.iter_bytes()
        first = next(iterator)
        message_id = message_id_of(first)

        def flushed() -> dict | None:  # the reply as listed, once some of its content is stored
            listed = httpx.get(
                f"{server}{owner.conversation_url(conversation)}/messages", headers=headers(owner), timeout=10
            ).json()["items"]
            running = next(m for m in listed if m["id"] == message_id)
            return running if running["content"] else None

        # The reply takes ~6 s; flushes come every GENERATION_FLUSH_SECONDS (1 s) while it runs.
        running = wait_until(flushed, timeout=5, interval=0.1, what="a flush of the partial content")
        assert running["status"] == "in_progress"
        assert running["content"].startswith("You wrote:")
        for _ in iterator:
            pass
    assert Message.objects.get(id=message_id).status == "completed"


@pytest.mark.slow
def test_cancel_stops_a_running_stream_and_keeps_the_partial_reply(server, owner):
    slow(owner, 60)
    conversation = owner.conversation()
    with httpx.stream(
        "POST",
        stream_url(server, owner, conversation),
        json={"content": LONG_QUESTION},
        headers=headers(owner),
        timeout=30,
    ) as response:
        iterator = response.iter_bytes()
        chunks = [next(iterator)]
        message_id = message_id_of(chunks[0])
        while not any("content" in event["data"] for event in events_only(complete_events(chunks))):
            chunks.append(next(iterator))  # cancel once the engine has said something
        cancelled = httpx.post(
            f"{server}{owner.conversation_url(conversation)}/messages/{message_id}/cancel",
            headers=headers(owner),
            timeout=10,
        )
        chunks += list(iterator)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    events = events_only(parse_sse(b"".join(chunks)))
    assert events[-1]["data"] == {"done": True, "status": "cancelled"}
    message = Message.objects.get(id=message_id)
    assert message.status == "cancelled"
    assert message.content == content_of(events)
    assert 0 < len(message.content) < 200


@pytest.mark.slow
def test_a_stream_while_another_runs_is_409_before_any_event(server, owner):
    slow(owner, 30)
    conversation = owner.conversation()
    url = stream_url(server, owner, conversation)
    with httpx.stream("POST", url, json={"content": "first"}, headers=headers(owner), timeout=30) as response:
        iterator = response.iter_bytes()
        first = next(iterator)
        running_id = message_id_of(first)
        second = httpx.post(
            url, json={"content": "second"}, headers=headers(owner, Accept="text/event-stream"), timeout=10
        )
        assert second.status_code == 409
        assert second.headers["content-type"] == "application/json"
        assert second.json()["error"]["details"]["message_id"] == running_id
        for _ in iterator:
            pass


@pytest.mark.slow
def test_a_stream_honours_the_idempotency_key(server, owner):
    conversation = owner.conversation()
    url = stream_url(server, owner, conversation)
    request_headers = headers(owner, **{"Idempotency-Key": "stream-1"})
    _, first = read_all("POST", url, json={"content": "once"}, headers=request_headers)
    _, again = read_all("POST", url, json={"content": "once"}, headers=request_headers)
    assert events_only(again) == events_only(first)
    assert Message.objects.filter(conversation=conversation).count() == 2
    other = httpx.post(url, json={"content": "twice"}, headers=request_headers, timeout=10)
    assert other.status_code == 422


@pytest.mark.slow
def test_joining_validates_its_input(server, owner, outsider):
    conversation = owner.conversation()
    _, entries = read_all(
        "POST", stream_url(server, owner, conversation), json={"content": "x"}, headers=headers(owner)
    )
    message_id = events_only(entries)[0]["data"]["message"]["id"]
    url = join_url(server, owner, conversation, message_id)
    assert httpx.get(url, headers=headers(owner, **{"Last-Event-ID": "garbage"})).status_code == 400
    assert httpx.get(url, params={"after": "x"}, headers=headers(owner)).status_code == 400
    assert httpx.get(url, params={"after": ""}, headers=headers(owner)).status_code == 400  # not "from the start"
    user_id = Message.objects.get(id=message_id).parent_id
    assert httpx.get(join_url(server, owner, conversation, user_id), headers=headers(owner)).status_code == 404
    assert httpx.get(url, headers=headers(outsider)).status_code == 404
    assert httpx.get(url).status_code == 401


@pytest.mark.slow
def test_an_engine_failure_mid_stream_ends_with_an_error_event(owner, django_db_blocker):
    owner.agent.engine, owner.agent.model = "openai", "malformed"
    owner.agent.save()
    conversation = owner.conversation()
    with (
        OpenAIServer() as llm,
        django_db_blocker.unblock(),
        served(REDIS_URL="", OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-test") as base,
    ):
        response, entries = read_all(
            "POST", stream_url(base, owner, conversation), json={"content": "hi"}, headers=headers(owner)
        )
        events = events_only(entries)
        assert response.status_code == 200
        assert [next(iter(e["data"])) for e in events] == ["message", "content", "error"]
        assert "stream broke" in events[-1]["data"]["error"]
        message = Message.objects.get(id=events[0]["data"]["message"]["id"])
        assert message.status == "failed" and message.content == "Half"

        owner.agent.model = "echo"
        owner.agent.save()
        _, after = read_all(
            "POST", stream_url(base, owner, conversation), json={"content": "again"}, headers=headers(owner)
        )
        assert events_only(after)[-1]["data"] == {"done": True, "status": "completed"}


@needs_redis
@pytest.mark.slow
def test_join_and_cancel_from_another_process_through_redis(owner, django_db_blocker):
    slow(owner, 50)
    conversation = owner.conversation()
    with django_db_blocker.unblock(), served(REDIS_URL=REDIS_URL) as a, served(REDIS_URL=REDIS_URL) as b:
        seen: list[dict] = []
        with httpx.stream(
            "POST",
            stream_url(a, owner, conversation),
            json={"content": LONG_QUESTION},
            headers=headers(owner),
            timeout=30,
        ) as response:
            buffer = b""
            for chunk in response.iter_bytes():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n\n")
                seen += events_only(parse_sse(b"".join(block + b"\n\n" for block in complete)))
                if len(seen) >= 12:
                    break  # disconnect midway from process A
        message_id = seen[0]["data"]["message"]["id"]
        last = seen[-1]["id"]

        joined: list[dict] = []
        with httpx.stream(
            "GET",
            join_url(b, owner, conversation, message_id),
            headers=headers(owner, **{"Last-Event-ID": last}),
            timeout=30,
        ) as response:
            buffer = b""
            cancelled = None
            for chunk in response.iter_bytes():
                buffer += chunk
                *complete, buffer = buffer.split(b"\n\n")
                joined += events_only(parse_sse(b"".join(block + b"\n\n" for block in complete)))
                if cancelled is None and len(joined) >= 5:
                    cancelled = httpx.post(
                        f"{b}{owner.conversation_url(conversation)}/messages/{message_id}/cancel",
                        headers=headers(owner),
                        timeout=10,
                    )
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert joined[0]["id"] == f"{message_id}:{len(seen)}"
        assert joined[-1]["data"] == {"done": True, "status": "cancelled"}
        message = Message.objects.get(id=message_id)
        assert message.status == "cancelled"
        assert message.content == content_of(seen + joined)
        assert len(message.content) < len(LONG_QUESTION)


def test_settings_default_keepalive_is_fifteen_seconds():
    assert settings.STREAM_KEEPALIVE_SECONDS == 15.0


@pytest.mark.slow
def test_the_server_takes_stale_replies_over_by_itself(owner, django_db_blocker):
    """A reply left running by a process that is gone is continued by the next one to start (the builtin
    engine, whose answer does not begin with what was streamed, continues after it)."""
    stale = reply_in_progress(owner, "partial")
    with django_db_blocker.unblock(), served(REDIS_URL="", GENERATION_STALE_SECONDS="2") as base:
        httpx.get(f"{base}/healthz")  # the first request starts the process's maintenance
        wait_until(lambda: ended(stale.id), timeout=10, interval=0.1, what="the server's sweep")
    stale.refresh_from_db()
    assert stale.status == "completed" and stale.content.startswith("partial") and stale.content != "partial"


@pytest.mark.slow
def test_a_client_ahead_of_a_swept_replys_last_flush_still_gets_its_end(server, owner):
    stale = reply_in_progress(
        owner,
        "partial",
        stream_index=[[0, "message", 0, 0], [1, "content", 0, 7]],
        extra_events=[{"message": {"id": "-"}}],
    )
    conversation = stale.conversation
    call_command("sweep_stale_messages", stdout=io.StringIO())
    # Its process had streamed up to seq 5 before it died; it had flushed only up to seq 1.
    for last_seen, expected_content in ((5, ""), (0, "partial")):
        response, entries = read_all(
            "GET",
            join_url(server, owner, conversation, stale.id),
            headers=headers(owner, **{"Last-Event-ID": f"{stale.id}:{last_seen}"}),
        )
        events = events_only(entries)
        assert response.status_code == 200
        assert content_of(events) == expected_content
        assert "interrupted" in events[-1]["data"]["error"]
        assert int(events[-1]["id"].rsplit(":", 1)[1]) > last_seen


@pytest.mark.slow
def test_on_disconnect_cancel_also_works_with_an_idempotency_key(server, owner):
    slow(owner, 100)
    conversation = owner.conversation()
    url = f"{server}{owner.conversation_url(conversation)}/messages"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            url,
            json={"content": "stop when I leave", "on_disconnect": "cancel"},
            headers=headers(owner, **{"Idempotency-Key": "leave-1"}),
            timeout=httpx.Timeout(10, read=0.8),
        )
    wait_until(
        lambda: not Message.objects.filter(conversation=conversation, status="in_progress").exists(),
        timeout=5,
        what="the reply to stop",
    )
    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert reply.status == "cancelled"


@needs_redis
def test_an_append_cancelled_midway_is_neither_lost_nor_overtaken():
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    async def scenario() -> list[int]:
        log = RedisLog(REDIS_URL)  # no connection yet: the first append waits for one
        message_id = f"msg_append_{random.randrange(10**9)}"
        appending = asyncio.ensure_future(log.append(message_id, 0, {"content": "a"}))
        await asyncio.sleep(0)  # the append has begun
        appending.cancel()  # as a cancel of the generation does
        await log.append(message_id, 1, {"done": True, "status": "cancelled"})
        entries, ended = await log.read(message_id, -1, 1, wait=False)
        await log.reset(message_id)
        assert ended
        return [seq for seq, _ in entries]

    assert async_to_sync(scenario)() == [0, 1]


@pytest.mark.slow
def test_a_continued_reply_keeps_its_ids_so_resuming_from_the_first_run_is_exact(any_log_server, owner):
    server = any_log_server
    slow(owner, 5)
    conversation = owner.conversation()
    url = stream_url(server, owner, conversation)
    _, first_run = read_all("POST", url, json={"content": "a b c"}, headers=headers(owner))
    first_run = events_only(first_run)
    message_id = first_run[0]["data"]["message"]["id"]
    assert first_run[-1]["data"] == {"done": True, "status": "completed"}
    _, second_run = read_all(
        "POST", stream_url(server, owner, conversation), json={"continue": True}, headers=headers(owner)
    )
    second_run = events_only(second_run)
    _, replay = read_all("GET", join_url(server, owner, conversation, message_id), headers=headers(owner))
    replay = events_only(replay)

    seq = lambda entry: int(entry["id"].rsplit(":", 1)[1])  # noqa: E731
    assert second_run == replay
    assert replay[: len(first_run) - 1] == first_run[:-1]  # what was said keeps its ids; the old end is gone
    assert seq(replay[len(first_run) - 1]) > seq(first_run[-1])
    assert replay[-1]["data"] == {"done": True, "status": "completed"}
    assert content_of(replay) == Message.objects.get(id=message_id).content
    for cut in [seq(entry) for entry in first_run]:  # a client of the first run resumes: exactly the rest
        _, rest = read_all(
            "GET",
            join_url(server, owner, conversation, message_id),
            headers=headers(owner, **{"Last-Event-ID": f"{message_id}:{cut}"}),
        )
        assert events_only(rest) == [entry for entry in replay if seq(entry) > cut], cut


@needs_redis
def test_appends_of_many_generations_share_pipelines_and_keep_each_logs_order():
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    async def scenario() -> None:
        log, elsewhere = RedisLog(REDIS_URL), RedisLog(REDIS_URL)  # `elsewhere` reads Redis only
        prefix = f"msg_batch_{random.randrange(10**9)}"

        async def generation(n: int) -> None:
            for seq in range(20):
                await log.append(f"{prefix}_{n}", seq, {"content": f"{n}:{seq} "})
            await log.append(f"{prefix}_{n}", 20, {"done": True, "status": "completed"})

        await asyncio.gather(*(generation(n) for n in range(50)))
        client = elsewhere.writer.clients.get()
        for n in range(50):
            entries, ended = await elsewhere.read(f"{prefix}_{n}", -1, 1, wait=False)
            assert ended and [seq for seq, _ in entries] == list(range(21))
            assert [event.get("content") for _, event in entries[:3]] == [f"{n}:0 ", f"{n}:1 ", f"{n}:2 "]
            assert 0 < await client.ttl(f"parley:stream:{prefix}_{n}") <= settings.STREAM_LOG_TTL_SECONDS
            await log.reset(f"{prefix}_{n}")

    async_to_sync(scenario)()


@needs_redis
def test_an_append_redis_already_has_from_a_dropped_connection_is_applied_once():
    """redis-py sends a pipeline again after its connection drops, and Redis may have run the first
    attempt: an append of a seq the stream already holds is the append done, not a second entry."""
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    async def scenario() -> None:
        log = RedisLog(REDIS_URL)
        message_id = f"msg_retried_{random.randrange(10**9)}"
        key = f"parley:stream:{message_id}"
        await log.append(message_id, 0, {"message": {"id": message_id}})
        # What the first attempt of the pipeline carrying seq 1 left in Redis before the connection dropped.
        await log.writer.clients.get().xadd(key, {"e": json.dumps({"content": "a"})}, id="0-2")

        await log.append(message_id, 1, {"content": "a"})  # the retry: done already
        await log.append(message_id, 1, {"content": "a"})  # and again
        await log.append(message_id, 2, {"content": "b"})  # the next one goes on
        entries, _ = await log.read(message_id, -1, 1, wait=False)
        await log.reset(message_id)
        assert entries == [(0, {"message": {"id": message_id}}), (1, {"content": "a"}), (2, {"content": "b"})]

    async_to_sync(scenario)()


@needs_redis
def test_appends_go_on_after_redis_forgot_the_append_script():
    """Redis keeps scripts in memory only: after a restart (here SCRIPT FLUSH) the writer loads it again."""
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    async def scenario() -> None:
        log = RedisLog(REDIS_URL)
        message_id = f"msg_flushed_{random.randrange(10**9)}"
        await log.append(message_id, 0, {"content": "a"})
        await log.writer.clients.get().script_flush()
        await log.append(message_id, 1, {"content": "b"})
        entries, _ = await RedisLog(REDIS_URL).read(message_id, -1, 1, wait=False)  # from Redis, not the mirror
        await log.reset(message_id)
        assert entries == [(0, {"content": "a"}), (1, {"content": "b"})]

    async_to_sync(scenario)()


@needs_redis
def test_the_cancel_checks_of_many_generations_are_one_round_trip_and_each_right():
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    async def scenario() -> None:
        log = RedisLog(REDIS_URL)
        ids = [f"msg_cancels_{random.randrange(10**9)}_{n}" for n in range(50)]
        for message_id in ids[::2]:
            await log.request_cancel(message_id)
        client = log.cancel_flags.clients.get()
        reads, mget = [], client.mget

        async def counted_mget(keys):
            reads.append(len(keys))
            return await mget(keys)

        client.mget = counted_mget
        answers = await asyncio.gather(*(log.is_cancel_requested(message_id) for message_id in ids))
        assert answers == [n % 2 == 0 for n in range(50)]
        assert reads == [50]
        # A cancel requested before the run started is not for it.
        assert not await log.is_cancel_requested(ids[0], since=time.time() + 60)
        await client.delete(*[f"parley:cancel:{message_id}" for message_id in ids])

    async_to_sync(scenario)()


def test_an_append_to_a_redis_that_stopped_answering_fails_after_redis_timeout():
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    silent = socket.socket()  # the kernel completes connections to it; nothing ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)

    async def scenario() -> float:
        log = RedisLog(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        async with asyncio.timeout(15):
            with pytest.raises(redis.exceptions.TimeoutError):
                await log.append("msg_stalled", 0, {"content": "a"})
        return time.monotonic() - started

    with silent, override_settings(REDIS_TIMEOUT_SECONDS=0.2):
        assert async_to_sync(scenario)() < 2  # the setting, not redis-py's default of 5 s


@needs_redis
def test_a_reader_elsewhere_waits_through_a_quiet_spell_longer_than_redis_timeout():
    """A client following a run from another process blocks in XREAD up to the keep-alive interval (15 s):
    longer than a command's timeout. A model thinking for longer than that must not break its stream (here
    the timeout is 0.5 s and the quiet spell 1.5 s)."""
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    async def scenario() -> tuple:
        writer, elsewhere = RedisLog(REDIS_URL), RedisLog(REDIS_URL)
        message_id = f"msg_quiet_{random.randrange(10**9)}"
        await writer.append(message_id, 0, {"message": {"id": message_id}})
        try:
            return await elsewhere.read(message_id, 0, 1.5)  # nothing comes for 1.5 s
        finally:
            await writer.reset(message_id)

    with override_settings(REDIS_TIMEOUT_SECONDS=0.5):
        assert async_to_sync(scenario)() == ([], False)


def test_a_cancel_check_redis_cannot_answer_fails_for_each_caller():
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    async def scenario() -> None:
        log = RedisLog(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
        answers = await asyncio.gather(
            log.is_cancel_requested("msg_a"), log.is_cancel_requested("msg_b"), return_exceptions=True
        )
        assert all(isinstance(answer, redis.exceptions.ConnectionError) for answer in answers), answers
        assert not log.cancel_flags._lookups[asyncio.get_running_loop()].waiting  # nothing left behind

    async_to_sync(scenario)()


def test_an_append_redis_refuses_fails_for_its_caller_and_frees_the_mirror():
    from asgiref.sync import async_to_sync

    from turns.log.redis import RedisLog

    async def scenario() -> None:
        log = RedisLog(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
        log.writer.local.append_now("msg_unreachable", 0, {"content": "a"})  # a run under way, mirrored here
        with pytest.raises(redis.exceptions.ConnectionError):
            await log.append("msg_unreachable", 1, {"content": "b"})
        # The mirror stops where Redis did and is freed: readers here go on from Redis or the stored reply.
        assert await log.writer.local.read("msg_unreachable", -1, 0.1, wait=False) is None
        with pytest.raises(redis.exceptions.ConnectionError):
            await log.append("msg_unreachable", 2, {"done": True, "status": "completed"})
        assert await log.writer.local.read("msg_unreachable", -1, 0.1, wait=False) is None

    async_to_sync(scenario)()


def test_a_reader_of_the_in_process_log_wakes_for_an_append_or_at_its_timeout():
    from asgiref.sync import async_to_sync

    from turns.log.memory import MemoryLog

    async def scenario() -> None:
        log = MemoryLog()
        log.append_now("msg_live", 0, {"message": {"id": "msg_live"}})

        started = time.monotonic()
        assert await log.read("msg_live", 0, 0.1) == ([], False)  # nothing new: back at the timeout
        assert 0.09 <= time.monotonic() - started < 1

        reading = asyncio.ensure_future(log.read("msg_live", 0, 30))
        await asyncio.sleep(0)  # one turn of the loop: the reader is now waiting
        assert not reading.done()
        log.append_now("msg_live", 1, {"content": "a"})
        assert await asyncio.wait_for(reading, 1) == ([(1, {"content": "a"})], False)

        reading = asyncio.ensure_future(log.read("msg_live", 1, 30))
        await asyncio.sleep(0)
        assert not reading.done()
        log.append_now("msg_live", 2, {"done": True, "status": "completed"})
        assert await asyncio.wait_for(reading, 1) == ([(2, {"done": True, "status": "completed"})], True)
        assert await log.read("msg_live", 2, 0.1) is None  # ended: the stored message has the rest

    async_to_sync(scenario)()
