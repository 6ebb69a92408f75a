"""Editing a conversation's history through the API: a user message edited as a new branch (the agent answers
it) or in place before any reply; a message deleted with its subtree, the current message moving to its
parent; messages added without running the agent; another tenant's ids are 404; a running reply is 409."""

import pytest

from conversations.models import Conversation, Feedback, Message

pytestmark = pytest.mark.django_db(transaction=True)


def post(ctx, conversation, body: dict) -> dict:
    response = ctx.client.post(f"{ctx.conversation_url(conversation)}/messages", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def test_an_edited_question_is_a_new_branch_the_agent_answers(owner):
    conversation = owner.conversation()
    first_q, first_a = post(owner, conversation, {"content": "Hello", "metadata": {"k": 1}})["messages"]
    url = f"{owner.conversation_url(conversation)}/messages/{first_q['id']}"
    edited = owner.client.patch(url, {"content": "Hello again"}, format="json")
    assert edited.status_code == 200, edited.json()
    new_q, new_a = edited.json()["messages"]
    assert new_q["id"] != first_q["id"] and new_q["parent_id"] is None and new_q["content"] == "Hello again"
    assert new_q["metadata"] == {"k": 1} and new_a["parent_id"] == new_q["id"] and new_a["status"] == "completed"
    assert edited.json()["current_message_id"] == new_a["id"]
    everything = owner.client.get(f"{owner.conversation_url(conversation)}/messages", {"branch": "all"}).json()
    assert {m["id"] for m in everything["items"]} == {first_q["id"], first_a["id"], new_q["id"], new_a["id"]}
    active = owner.client.get(f"{owner.conversation_url(conversation)}/messages").json()["items"]
    assert [m["id"] for m in active] == [new_q["id"], new_a["id"]]


def test_a_question_without_a_reply_is_edited_in_place_and_nothing_runs(owner):
    conversation = owner.conversation()
    seeded = owner.client.post(
        f"{owner.conversation_url(conversation)}/messages/append",
        {"messages": [{"role": "user", "content": "Helo"}]},
        format="json",
    ).json()["messages"][0]
    url = f"{owner.conversation_url(conversation)}/messages/{seeded['id']}"
    fixed = owner.client.patch(url, {"content": "Hello", "in_place": True}, format="json")
    assert fixed.status_code == 200 and (fixed.json()["id"], fixed.json()["content"]) == (seeded["id"], "Hello")
    assert Message.objects.filter(conversation=conversation).count() == 1
    # Once it has a reply, in place is refused: the reply answered the old text.
    answered = post(owner, conversation, {"content": "Next"})
    question_with_reply = answered["messages"][0]["id"]
    refused = owner.client.patch(
        f"{owner.conversation_url(conversation)}/messages/{question_with_reply}",
        {"content": "Changed", "in_place": True},
        format="json",
    )
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("in_place:")
    reply = owner.client.patch(
        f"{owner.conversation_url(conversation)}/messages/{answered['messages'][1]['id']}",
        {"content": "Not mine to edit"},
        format="json",
    )
    assert reply.status_code == 400 and reply.json()["error"]["message"].startswith("message_id:")


def test_deleting_a_message_deletes_its_subtree_and_moves_the_current_message(owner):
    conversation = owner.conversation()
    q1, a1 = post(owner, conversation, {"content": "One"})["messages"]
    q2, a2 = post(owner, conversation, {"content": "Two"})["messages"]
    Feedback.objects.create(tenant=owner.tenant, message_id=a2["id"], thumbs_up=True)
    deleted = owner.client.delete(f"{owner.conversation_url(conversation)}/messages/{q2['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": 2, "current_message_id": a1["id"]}
    conversation.refresh_from_db()
    assert (conversation.current_message_id, conversation.message_count) == (a1["id"], 2)
    assert set(Message.objects.filter(conversation=conversation).values_list("id", flat=True)) == {q1["id"], a1["id"]}
    assert not Feedback.objects.filter(message_id=a2["id"]).exists()
    # The next question goes after what is current now.
    q3, _ = post(owner, conversation, {"content": "Three"})["messages"]
    assert q3["parent_id"] == a1["id"]
    again = owner.client.delete(f"{owner.conversation_url(conversation)}/messages/{q2['id']}")
    assert again.status_code == 404  # (already gone)
    everything = owner.client.delete(f"{owner.conversation_url(conversation)}/messages/{q1['id']}")
    assert everything.json() == {"deleted": 4, "current_message_id": None}
    assert Conversation.objects.get(pk=conversation.pk).message_count == 0


def test_messages_are_added_without_running_the_agent(owner):
    conversation = owner.conversation()
    url = f"{owner.conversation_url(conversation)}/messages/append"
    history = [
        {"role": "user", "content": "Our refund policy?", "metadata": {"source": "zendesk"}},
        {"role": "assistant", "content": "Refunds within 30 days."},
    ]
    added = owner.client.post(url, {"messages": history}, format="json")
    assert added.status_code == 201, added.json()
    user, assistant = added.json()["messages"]
    assert (user["parent_id"], assistant["parent_id"]) == (None, user["id"])
    assert (assistant["status"], assistant["content"], user["metadata"]) == ("completed", history[1]["content"],
                                                                              {"source": "zendesk"})  # fmt: skip
    assert added.json()["current_message_id"] == assistant["id"]
    conversation.refresh_from_db()
    assert (conversation.current_message_id, conversation.message_count) == (assistant["id"], 2)
    # The agent then answers what comes next, with that history.
    q, a = post(owner, conversation, {"content": "And after 30 days?"})["messages"]
    assert q["parent_id"] == assistant["id"] and a["status"] == "completed"
    # Two questions in a row (a seeded history may have them): the second is edited in place, not branched.
    seeded = owner.client.post(
        url, {"messages": [{"role": "user", "content": "One"}, {"role": "user", "content": "Two"}]}, format="json"
    ).json()["messages"]
    branch = owner.client.patch(
        f"{owner.conversation_url(conversation)}/messages/{seeded[1]['id']}", {"content": "2"}, format="json"
    )
    assert branch.status_code == 400 and "it follows another question" in branch.json()["error"]["message"]
    owner.client.delete(f"{owner.conversation_url(conversation)}/messages/{seeded[0]['id']}")
    # Bad input: each message checked, nothing half-written.
    for body, named in [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "ok"}, {"role": "user", "content": " "}]}, "messages[1].content"),
        ({"messages": [{"role": "user", "content": "x", "extra": 1}]}, "messages[0].extra"),
        ({"messages": [{"role": "user", "content": "x"}], "parent_id": "msg_nope"}, "parent_id"),
    ]:
        response = owner.client.post(url, body, format="json")
        assert response.status_code == 400 and response.json()["error"]["message"].startswith(named), body
    assert Message.objects.filter(conversation=conversation).count() == 4


def test_another_tenants_messages_are_not_found_and_a_running_reply_is_409(owner, outsider):
    conversation = owner.conversation()
    q, a = post(owner, conversation, {"content": "Mine"})["messages"]
    base = outsider.conversation_url(conversation).replace(
        f"/tenants/{owner.tenant.id}/", f"/tenants/{outsider.tenant.id}/"
    )
    for method, path, body in [
        ("patch", f"messages/{q['id']}", {"content": "x"}),
        ("delete", f"messages/{q['id']}", None),
        ("post", "messages/append", {"messages": [{"role": "user", "content": "x"}]}),
    ]:
        response = getattr(outsider.client, method)(f"{base}/{path}", body, format="json")
        assert response.status_code == 404, (method, path)
    assert Message.objects.filter(conversation=conversation).count() == 2
    Message.objects.filter(pk=a["id"]).update(status="in_progress")
    busy = owner.client.delete(f"{owner.conversation_url(conversation)}/messages/{q['id']}")
    assert busy.status_code == 409 and busy.json()["error"]["details"]["message_id"] == a["id"]
    appended = owner.client.post(
        f"{owner.conversation_url(conversation)}/messages/append",
        {"messages": [{"role": "user", "content": "x"}]},
        format="json",
    )
    assert appended.status_code == 409
    assert Message.objects.filter(conversation=conversation).count() == 2
