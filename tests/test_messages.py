import pytest

from conversations.models import Conversation, Message, TitleSource
from tenants.models import DailyUsage

# Generations write from worker threads with their own connections: rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def post(ctx, conversation, body, **headers):
    return ctx.client.post(f"{ctx.conversation_url(conversation)}/messages", body, format="json", **headers)


def test_post_and_wait_returns_the_turn_and_stores_it(owner):
    conversation = owner.conversation()
    response = post(owner, conversation, {"content": "Hello there"})
    assert response.status_code == 200, response.json()
    body = response.json()
    user, assistant = body["messages"]
    assert user["role"] == "user" and user["content"] == "Hello there" and user["parent_id"] is None
    assert assistant["role"] == "assistant" and assistant["parent_id"] == user["id"]
    assert assistant["status"] == "completed"
    assert 'You wrote: "Hello there"' in assistant["content"]
    assert assistant["output_tokens"] > 0 and assistant["input_tokens"] > 0
    assert body["current_message_id"] == assistant["id"]
    assert body["conversation"]["message_count"] == 2

    stored = Message.objects.get(id=assistant["id"])
    assert stored.content == assistant["content"]
    assert stored.completed_at is not None
    conversation.refresh_from_db()
    assert conversation.current_message_id == assistant["id"]
    assert conversation.message_count == 2
    assert conversation.updated_at >= stored.created_at
    usage = DailyUsage.objects.get(tenant=owner.tenant)
    assert usage.requests == 1 and usage.output_tokens == stored.output_tokens


def as_read_back(ctx, conversation, body) -> tuple[dict, list[dict]]:
    """The post-and-wait body's conversation and messages as the API shows them when read afterwards."""
    conversation_read = ctx.client.get(ctx.conversation_url(conversation)).json()
    listing = ctx.client.get(f"{ctx.conversation_url(conversation)}/messages", {"branch": "all"}).json()["items"]
    messages = {message["id"]: message for message in listing}
    return {key: conversation_read[key] for key in body["conversation"]}, [
        messages[message["id"]] for message in body["messages"]
    ]


def test_the_response_is_the_turn_as_read_back_afterwards(owner):
    # Built from the rows the turn stored, not read back: every field must still be what a read shows.
    conversation = Conversation.objects.create(
        tenant=owner.tenant, agent=owner.agent, name="", title_source=TitleSource.PROPOSED
    )
    first = post(owner, conversation, {"content": "What does a warehouse in Rotterdam store?"}).json()
    assert first["conversation"]["name"]  # titled by the turn
    assert (first["conversation"], first["messages"]) == as_read_back(owner, conversation, first)

    again = post(owner, conversation, {"regenerate": first["current_message_id"], "reasoning": True}).json()
    assert again["messages"][1]["thinking"]
    assert (again["conversation"], again["messages"]) == as_read_back(owner, conversation, again)

    owner.client.put(
        f"{owner.conversation_url(conversation)}/messages/{again['current_message_id']}/feedback",
        {"thumbs_up": True},
        format="json",
    )
    continued = post(owner, conversation, {"continue": True}).json()
    assert continued["messages"][1]["feedback"]["thumbs_up"] is True  # read back: the reply was rated before
    assert (continued["conversation"], continued["messages"]) == as_read_back(owner, conversation, continued)


def test_reasoning_is_stored_as_thinking(owner):
    conversation = owner.conversation()
    assistant = post(owner, conversation, {"content": "Hi", "reasoning": True}).json()["messages"][1]
    assert "Answering plainly." in assistant["thinking"]
    assert Message.objects.get(id=assistant["id"]).thinking == assistant["thinking"]
    plain = post(owner, conversation, {"content": "Again"}).json()["messages"][1]
    assert plain["thinking"] == ""


def test_the_second_turn_follows_the_first(owner):
    conversation = owner.conversation()
    first = post(owner, conversation, {"content": "one"}).json()
    second = post(owner, conversation, {"content": "two"}).json()
    assert second["messages"][0]["parent_id"] == first["current_message_id"]
    listing = owner.client.get(f"{owner.conversation_url(conversation)}/messages").json()
    assert [m["content"] for m in listing["items"][::2]] == ["one", "two"]
    assert len(listing["items"]) == 4


def test_branching_with_parent_id_switches_the_active_branch(owner):
    conversation = owner.conversation()
    first = post(owner, conversation, {"content": "one"}).json()
    post(owner, conversation, {"content": "two"})
    edited = post(owner, conversation, {"content": "two, edited", "parent_id": first["current_message_id"]}).json()
    assert edited["messages"][0]["parent_id"] == first["current_message_id"]

    url = f"{owner.conversation_url(conversation)}/messages"
    active = owner.client.get(url).json()["items"]
    assert [m["content"] for m in active if m["role"] == "user"] == ["one", "two, edited"]
    everything = owner.client.get(url, {"branch": "all"}).json()["items"]
    assert len(everything) == 6
    newest_first = owner.client.get(url, {"order": "desc"}).json()["items"]
    assert [m["id"] for m in newest_first] == [m["id"] for m in reversed(active)]

    root = post(owner, conversation, {"content": "start over", "parent_id": "root"}).json()
    assert root["messages"][0]["parent_id"] is None
    assert [m["content"] for m in owner.client.get(url).json()["items"]][0] == "start over"


def test_regenerate_adds_a_sibling_reply(owner):
    conversation = owner.conversation()
    first = post(owner, conversation, {"content": "one"}).json()
    user_id, old_reply = first["messages"][0]["id"], first["current_message_id"]
    again = post(owner, conversation, {"regenerate": old_reply}).json()
    new_reply = again["current_message_id"]
    assert new_reply != old_reply
    assert again["messages"][0]["id"] == user_id
    assert again["messages"][1]["parent_id"] == user_id
    assert Message.objects.filter(conversation=conversation, role="user").count() == 1
    state = owner.client.get(owner.conversation_url(conversation)).json()
    assert sorted(state["messages"][user_id]["children"]) == sorted([old_reply, new_reply])
    assert state["current_message_id"] == new_reply
    assert state["message_count"] == 3


def test_continue_extends_the_last_reply_in_place(owner):
    conversation = owner.conversation()
    first = post(owner, conversation, {"content": "one"}).json()
    reply_id, before = first["current_message_id"], first["messages"][1]["content"]
    continued = post(owner, conversation, {"continue": True}).json()
    assert continued["current_message_id"] == reply_id
    after = continued["messages"][1]["content"]
    assert after.startswith(before) and len(after) > len(before)
    assert Message.objects.get(id=reply_id).content == after
    assert Message.objects.filter(conversation=conversation).count() == 2
    # The builtin engine says its last sentence (how to configure an LLM engine) once, not again.
    assert after.count("configure an OpenAI-compatible engine") == 1


def test_conversation_state_is_a_bounded_tree(owner):
    conversation = owner.conversation()
    for word in ("a", "b", "c"):
        post(owner, conversation, {"content": word})
    state = owner.client.get(owner.conversation_url(conversation)).json()
    assert len(state["messages"]) == 6 and state["messages_truncated"] is False
    current = state["messages"][state["current_message_id"]]
    assert current["children"] == []
    parent = state["messages"][current["parent_id"]]
    assert parent["children"] == [current["id"]]
    small = owner.client.get(owner.conversation_url(conversation), {"messages_limit": 2}).json()
    assert len(small["messages"]) == 2 and small["messages_truncated"] is True
    assert state["current_message_id"] in small["messages"]
    bad = owner.client.get(owner.conversation_url(conversation), {"messages_limit": 1001})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("messages_limit")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "content"),
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": "x" * 100_001}, "content"),
        ({"content": 5}, "content"),
        ({"content": "hi", "parent_id": "msg_unknown"}, "parent_id"),
        ({"regenerate": "msg_unknown"}, "regenerate"),
        ({"regenerate": "x", "continue": True}, "continue"),
        ({"content": "hi", "regenerate": "x"}, "regenerate"),
        ({"content": "hi", "attachments": ["file_nope"]}, "attachments"),
        ({"content": "hi", "attachments": "file_nope"}, "attachments"),
        ({"content": "hi", "on_disconnect": "explode"}, "on_disconnect"),
        ({"content": "hi", "continue": 0}, "continue"),  # JSON booleans only (0 was taken for false)
        ({"content": "hi", "reasoning": "yes"}, "reasoning"),
    ],
)
def test_bad_posts_are_400_naming_the_field_and_store_nothing(owner, body, field):
    conversation = owner.conversation()
    response = post(owner, conversation, body)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["message"]
    assert Message.objects.count() == 0
    assert Conversation.objects.get(id=conversation.id).message_count == 0


def test_regenerating_a_user_message_is_400(owner):
    conversation = owner.conversation()
    user_id = post(owner, conversation, {"content": "one"}).json()["messages"][0]["id"]
    response = post(owner, conversation, {"regenerate": user_id})
    assert response.status_code == 400
    assert Message.objects.count() == 2


def test_continue_without_an_assistant_reply_is_400(owner):
    response = post(owner, owner.conversation(), {"continue": True})
    assert response.status_code == 400
    assert "continue" in response.json()["error"]["message"]


def test_ids_of_another_conversation_or_tenant_are_refused(owner, outsider):
    mine, other = owner.conversation("mine"), owner.conversation("other")
    other_reply = post(owner, other, {"content": "x"}).json()["current_message_id"]
    foreign = outsider.conversation()
    foreign_reply = post(outsider, foreign, {"content": "x"}).json()["current_message_id"]
    for body in (
        {"content": "hi", "parent_id": other_reply},
        {"regenerate": other_reply},
        {"content": "hi", "parent_id": foreign_reply},
    ):
        assert post(owner, mine, body).status_code == 400
    assert Message.objects.filter(conversation=mine).count() == 0
    # and the outsider's conversation itself does not exist for the owner
    response = owner.client.post(
        f"{owner.agent_url}/conversations/{foreign.id}/messages", {"content": "x"}, format="json"
    )
    assert response.status_code == 404


def test_cancel_of_a_finished_message_returns_it_unchanged(owner):
    conversation = owner.conversation()
    reply = post(owner, conversation, {"content": "x"}).json()["messages"][1]
    url = f"{owner.conversation_url(conversation)}/messages/{reply['id']}/cancel"
    response = owner.client.post(url)
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
    user_id = reply["parent_id"]
    assert owner.client.post(f"{owner.conversation_url(conversation)}/messages/{user_id}/cancel").status_code == 404
