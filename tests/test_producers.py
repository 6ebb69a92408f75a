"""Which engine and model produced each reply, and replies cut by the model's token limit: a reply stores
its engine and model as they were when it started (the agent's later changes do not rewrite history), the
tenant-wide list shows a conversation's latest, and a reply cut short is `finish_reason: "length"`, which
the conversation state announces (`can_continue`) and `continue` extends."""

import pytest
from django.test import override_settings

from conversations.models import Message
from tests.openai_server import OpenAIServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def llm():
    with OpenAIServer() as server, override_settings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test"):
        yield server


def post(ctx, conversation, body: dict) -> dict:
    response = ctx.client.post(f"{ctx.conversation_url(conversation)}/messages", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def test_each_reply_keeps_the_engine_and_model_that_produced_it(owner, llm):
    conversation = owner.conversation()
    first = post(owner, conversation, {"content": "Hello"})["messages"]
    assert (first[0]["engine"], first[0]["model"], first[0]["finish_reason"]) == ("", "", "")
    assert (first[1]["engine"], first[1]["model"], first[1]["finish_reason"]) == ("builtin", "", "stop")
    owner.agent.engine, owner.agent.model = "openai", "echo"
    owner.agent.save()
    second = post(owner, conversation, {"content": "Again"})["messages"][1]
    assert (second["engine"], second["model"], second["finish_reason"]) == ("openai", "echo", "stop")
    listed = owner.client.get(f"{owner.conversation_url(conversation)}/messages").json()["items"]
    assert [(m["engine"], m["model"]) for m in listed if m["role"] == "assistant"] == [
        ("builtin", ""),
        ("openai", "echo"),
    ]
    tenant_list = owner.client.get(f"{owner.base}/conversations").json()["items"]
    assert (tenant_list[0]["engine"], tenant_list[0]["model"]) == ("openai", "echo")
    # The agent moves on; the replies and the conversation still say what produced them.
    owner.agent.model = "reasoner"
    owner.agent.save()
    assert Message.objects.get(id=second["id"]).model == "echo"
    assert owner.client.get(f"{owner.base}/conversations").json()["items"][0]["model"] == "echo"


def test_a_reply_cut_by_the_token_limit_can_be_continued(owner, llm):
    owner.agent.engine, owner.agent.model = "openai", "cut"
    owner.agent.save()
    conversation = owner.conversation()
    reply = post(owner, conversation, {"content": "Tell me everything"})["messages"][1]
    assert (reply["status"], reply["content"], reply["finish_reason"]) == ("completed", "The beginning of", "length")
    state = owner.client.get(owner.conversation_url(conversation)).json()
    assert state["can_continue"] is True and state["current_message_id"] == reply["id"]
    continued = post(owner, conversation, {"continue": True})["messages"][1]
    assert continued["id"] == reply["id"]
    assert (continued["content"], continued["finish_reason"]) == ("The beginning of the rest.", "stop")
    assert owner.client.get(owner.conversation_url(conversation)).json()["can_continue"] is False


def test_a_reply_that_did_not_complete_has_no_finish_reason_and_cannot_be_continued_by_the_state(owner, llm):
    owner.agent.engine, owner.agent.model = "openai", "broken"
    owner.agent.save()
    conversation = owner.conversation()
    response = owner.client.post(f"{owner.conversation_url(conversation)}/messages", {"content": "x"}, format="json")
    assert response.status_code == 502
    reply = Message.objects.get(conversation=conversation, role="assistant")
    assert (reply.status, reply.finish_reason, reply.model) == ("failed", "", "broken")
    assert owner.client.get(owner.conversation_url(conversation)).json()["can_continue"] is False
