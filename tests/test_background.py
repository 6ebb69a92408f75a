"""Background turns: `POST .../messages` with `background: true` answers 202 at once with the question and
the `in_progress` reply, which runs on and can be followed or read later; with an Idempotency-Key, one turn
whatever the retries, even fifty at once."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message, MessageStatus
from tests.conftest import async_client, await_until

pytestmark = pytest.mark.django_db(transaction=True)


async def apost(client, url, body, **headers):
    return await client.post(url, body, content_type="application/json", headers=headers)


async def test_a_background_post_answers_202_at_once_and_the_reply_runs_on(slow_agent):
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    client = async_client(owner)
    url = f"{owner.conversation_url(conversation)}/messages"
    started = await apost(client, url, {"content": "Tell me about March", "background": True})
    assert started.status_code == 202, started.json()
    question, reply = started.json()["messages"]
    assert (question["role"], question["content"]) == ("user", "Tell me about March")
    assert reply["status"] == "in_progress" and started.json()["current_message_id"] == reply["id"]
    # Still running when the answer came (the slow agent takes about 1.5 s), and it ends on its own.
    stored = await Message.objects.aget(pk=reply["id"])
    assert stored.status == MessageStatus.IN_PROGRESS
    ended = await await_until(
        lambda: Message.objects.filter(pk=reply["id"], status=MessageStatus.COMPLETED).aexists(), timeout=20
    )
    assert ended
    read = await client.get(f"{url}?order=desc&limit=1")
    assert read.json()["items"][0]["content"]
    # The stream of the ended reply replays it whole.
    stream = await client.get(f"{url}/{reply['id']}/stream", headers={"Accept": "text/event-stream"})
    text = b"".join([chunk async for chunk in stream.streaming_content]).decode()
    assert '"done":true' in text.replace(" ", "")


async def test_fifty_background_retries_with_one_key_make_one_turn(slow_agent):
    owner = slow_agent
    conversation = await sync_to_async(owner.conversation)()
    client = async_client(owner)
    url = f"{owner.conversation_url(conversation)}/messages"
    body = {"content": "once", "background": True}
    responses = await asyncio.gather(*[apost(client, url, body, **{"Idempotency-Key": "bg-1"}) for _ in range(50)])
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["current_message_id"] for r in responses}) == 1
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    await await_until(
        lambda: Message.objects.filter(conversation=conversation, status=MessageStatus.COMPLETED).aexists(),
        timeout=20,
    )


async def test_background_is_a_boolean_of_post_and_wait_only(owner):
    conversation = await sync_to_async(owner.conversation)()
    client = async_client(owner)
    url = owner.conversation_url(conversation)
    wrong = await apost(client, f"{url}/messages", {"content": "x", "background": "yes"})
    assert wrong.status_code == 400 and wrong.json()["error"]["message"] == "background: Must be true or false."
    streamed = await apost(client, f"{url}/stream", {"content": "x", "background": True})
    assert streamed.status_code == 400 and streamed.json()["error"]["message"] == "background: Unknown field."
    assert not await Message.objects.filter(conversation=conversation).aexists()
