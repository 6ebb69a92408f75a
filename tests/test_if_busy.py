"""A message posted while a reply runs: `if_busy` reject (409, the default), enqueue (it runs when the
running reply and the turns queued before it have ended, in order, each with its own reply; a queued turn
can be cancelled; the queue outlives the process) or interrupt (the running reply is kept `cancelled` and the
new turn runs at once), or the agent's own default."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message, MessageStatus, QueuedTurn
from tests.conftest import async_client, await_until
from tests.servers import served
from turns.runtime import conversations_with_queue_waiting, queued_turns_advance

pytestmark = pytest.mark.django_db(transaction=True)


async def apost(client, url, body, **headers):
    return await client.post(url, body, content_type="application/json", headers=headers)


async def _conversation(ctx, chunk_delay_ms: int):
    ctx.agent.options = {"chunk_delay_ms": chunk_delay_ms}
    await ctx.agent.asave()
    return await sync_to_async(ctx.conversation)()


async def test_interrupt_cancels_the_running_reply_and_runs_the_new_turn(owner):
    conversation = await _conversation(owner, 100)  # (a reply of several seconds)
    client, url = async_client(owner), f"{owner.conversation_url(conversation)}/messages"
    first = await apost(client, url, {"content": "A long answer please", "background": True})
    running_id = first.json()["current_message_id"]
    await await_until(lambda: Message.objects.filter(pk=running_id).exclude(content="").aexists())
    second = await apost(client, url, {"content": "Never mind: this instead", "if_busy": "interrupt"})
    assert second.status_code == 200, second.json()
    question, reply = second.json()["messages"]
    interrupted = await Message.objects.aget(pk=running_id)
    assert interrupted.status == MessageStatus.CANCELLED and interrupted.content  # its partial text kept
    assert question["parent_id"] == running_id and reply["status"] == "completed"


async def test_twenty_enqueued_posts_run_one_after_the_other_in_order(owner):
    conversation = await _conversation(owner, 1)
    client, url = async_client(owner), f"{owner.conversation_url(conversation)}/messages"
    bodies = [{"content": f"Question {number}", "if_busy": "enqueue"} for number in range(20)]
    responses = await asyncio.gather(*[apost(client, url, body) for body in bodies])
    assert [r.status_code for r in responses] == [200] * 20, [r.json() for r in responses if r.status_code != 200]
    turns = [r.json()["messages"] for r in responses]
    assert all(reply["status"] == "completed" and reply["parent_id"] == q["id"] for q, reply in turns)
    assert [q["content"] for q, _ in turns] == [body["content"] for body in bodies]  # each its own reply
    # One chain, in the order they were queued: each question follows the previous reply.
    queued = [row async for row in QueuedTurn.objects.filter(conversation=conversation).order_by("created_at", "id")]
    by_question = {q["id"]: (q, reply) for q, reply in turns}
    chain = [by_question[row.user_message_id] for row in queued]
    assert all(chain[n + 1][0]["parent_id"] == chain[n][1]["id"] for n in range(19))
    assert await Message.objects.filter(conversation=conversation).acount() == 40


async def test_a_queued_message_is_cancelled_and_never_runs(owner):
    conversation = await _conversation(owner, 15)
    client, url = async_client(owner), f"{owner.conversation_url(conversation)}/messages"
    first = await apost(client, url, {"content": "First", "background": True})
    queued = await apost(client, url, {"content": "Second", "background": True, "if_busy": "enqueue"})
    assert queued.status_code == 202 and queued.json()["queued_turn"]["status"] == "queued"
    turn_id = queued.json()["queued_turn"]["id"]
    listed = await client.get(f"{owner.conversation_url(conversation)}/queue")
    assert [t["id"] for t in listed.json()] == [turn_id] and listed.json()[0]["content"] == "Second"
    cancelled = await client.delete(f"{owner.conversation_url(conversation)}/queue/{turn_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await client.delete(f"{owner.conversation_url(conversation)}/queue/{turn_id}")
    assert again.status_code == 409
    await await_until(
        lambda: Message.objects.filter(pk=first.json()["current_message_id"], status="completed").aexists(),
        timeout=20,
    )
    assert await sync_to_async(conversations_with_queue_waiting)() == []
    assert await Message.objects.filter(conversation=conversation).acount() == 2


async def test_the_agents_default_and_a_queue_left_by_a_dead_process(owner):
    conversation = await _conversation(owner, 15)
    owner.agent.options = {"chunk_delay_ms": 15, "if_busy": "enqueue"}
    await owner.agent.asave()
    client, url = async_client(owner), f"{owner.conversation_url(conversation)}/messages"
    await apost(client, url, {"content": "First", "background": True})
    second = await apost(client, url, {"content": "Second", "background": True})
    assert second.status_code == 202 and second.json()["queued_turn"]["status"] == "queued"
    reject = await apost(client, url, {"content": "Third", "if_busy": "reject"})
    assert reject.status_code == 409 and reject.json()["error"]["details"]["if_busy"] == "reject"
    started = await await_until(
        lambda: QueuedTurn.objects.filter(pk=second.json()["queued_turn"]["id"], status="started").afirst(),
        timeout=20,
    )
    await await_until(lambda: Message.objects.filter(pk=started.message_id, status="completed").aexists(), timeout=20)
    # A turn queued by a process that died before it could start it (no reply runs in its conversation to
    # start it at its end): the sweep of any process starts it.
    idle = await sync_to_async(owner.conversation)()
    await QueuedTurn.objects.acreate(tenant=owner.tenant, conversation=idle, request={"content": "Left behind"})
    assert await sync_to_async(conversations_with_queue_waiting)() == [idle.id]
    plan = await queued_turns_advance(idle.id)
    assert plan is not None
    await await_until(lambda: Message.objects.filter(pk=plan.message_id, status="completed").aexists(), timeout=20)
    assert await sync_to_async(conversations_with_queue_waiting)() == []


@pytest.mark.slow
def test_twenty_enqueued_posts_across_two_server_processes_run_in_order(owner):
    """The queue is the database's: two uvicorn processes sharing Redis take the posts alternately, and
    whichever sees a reply end starts the next turn; each post waits for its own reply."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("two processes share their replies through Redis: needs REDIS_URL (set by .ci/run)")
    owner.agent.options = {"chunk_delay_ms": 2}
    owner.agent.save()
    conversation = owner.conversation()
    path = f"{owner.conversation_url(conversation)}/messages"
    with served(REDIS_URL=redis_url) as first, served(REDIS_URL=redis_url) as second:

        def post(number: int) -> httpx.Response:
            return httpx.post(
                f"{(first, second)[number % 2]}{path}",
                json={"content": f"Question {number}", "if_busy": "enqueue"},
                headers={"Authorization": f"Bearer {owner.secret}"},
                timeout=120,
            )

        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(post, range(20)))
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    turns = {r.json()["messages"][0]["id"]: r.json()["messages"] for r in responses}
    assert all(reply["status"] == "completed" and reply["parent_id"] == q["id"] for q, reply in turns.values())
    queued = list(QueuedTurn.objects.filter(conversation=conversation).order_by("created_at", "id"))
    assert [row.status for row in queued] == ["started"] * 20
    chain = [turns[row.user_message_id] for row in queued]
    assert [q["content"] for q, _ in chain] == [row.request["content"] for row in queued]
    assert all(chain[n + 1][0]["parent_id"] == chain[n][1]["id"] for n in range(19))


async def test_an_interrupt_goes_before_the_queue_and_a_plain_post_does_not_jump_it(owner):
    conversation = await _conversation(owner, 100)
    client, url = async_client(owner), f"{owner.conversation_url(conversation)}/messages"
    first = await apost(client, url, {"content": "A long answer please", "background": True})
    running_id = first.json()["current_message_id"]
    queued = await apost(client, url, {"content": "Queued", "background": True, "if_busy": "enqueue"})
    assert queued.status_code == 202
    plain = await apost(client, url, {"content": "Plain", "if_busy": "reject"})
    assert plain.status_code == 409
    interrupting = await apost(client, url, {"content": "Now this", "if_busy": "interrupt"})
    assert interrupting.status_code == 200, interrupting.json()
    question, reply = interrupting.json()["messages"]
    assert question["parent_id"] == running_id and reply["status"] == "completed"
    assert (await Message.objects.aget(pk=running_id)).status == MessageStatus.CANCELLED
    # The queued turn runs after the interrupting one, answering after its reply.
    started = await await_until(
        lambda: QueuedTurn.objects.filter(pk=queued.json()["queued_turn"]["id"], status="started").afirst(),
        timeout=20,
    )
    later = await Message.objects.aget(pk=started.user_message_id)
    assert later.parent_id == reply["id"]
    await await_until(lambda: Message.objects.filter(pk=started.message_id, status="completed").aexists(), timeout=30)


async def test_an_enqueued_post_whose_conversation_is_deleted_meanwhile_is_404(owner):
    conversation = await _conversation(owner, 100)
    client, url = async_client(owner), f"{owner.conversation_url(conversation)}/messages"
    await apost(client, url, {"content": "A long answer please", "background": True})
    waiting = asyncio.ensure_future(apost(client, url, {"content": "Next", "if_busy": "enqueue"}))
    await await_until(lambda: QueuedTurn.objects.filter(conversation=conversation).aexists())
    assert (await client.delete(owner.conversation_url(conversation))).status_code == 200
    answer = await waiting
    assert answer.status_code == 404, answer.json()


async def test_a_client_that_leaves_while_its_turn_waits_takes_it_out_with_on_disconnect_cancel(owner):
    conversation = await _conversation(owner, 100)
    client, url = async_client(owner), f"{owner.conversation_url(conversation)}/messages"
    await apost(client, url, {"content": "A long answer please", "background": True})
    leaving = asyncio.ensure_future(
        apost(client, url, {"content": "Next", "if_busy": "enqueue", "on_disconnect": "cancel"})
    )
    staying = asyncio.ensure_future(apost(client, url, {"content": "Later", "if_busy": "enqueue", "background": True}))
    await await_until(lambda: QueuedTurn.objects.filter(conversation=conversation, request__content="Next").aexists())
    await staying
    leaving.cancel()  # the client goes away while its turn waits
    cancelled = await await_until(
        lambda: QueuedTurn.objects.filter(
            conversation=conversation, request__content="Next", status="cancelled"
        ).afirst()
    )
    assert cancelled.message_id == ""
    # The turn queued after it runs in its place, after the running reply.
    later = await await_until(
        lambda: QueuedTurn.objects.filter(
            conversation=conversation, request__content="Later", status="started"
        ).afirst(),
        timeout=30,
    )
    assert later.message_id
