"""Every API route, called with the outsider's key on the owner's objects, or the owner's key on the outsider's
objects, answers 404 in the error shape and changes nothing."""

import pytest

from agents.models import Agent
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db


def _routes(ctx, conversation):
    agent = ctx.agent_url
    conv = ctx.conversation_url(conversation)
    return [
        ("get", f"{ctx.base}/agents", None),
        ("post", f"{ctx.base}/agents", {"name": "x"}),
        ("get", agent, None),
        ("patch", agent, {"name": "stolen"}),
        ("delete", agent, None),
        ("get", f"{agent}/conversations", None),
        ("post", f"{agent}/conversations", {"name": "x"}),
        ("get", conv, None),
        ("patch", conv, {"name": "stolen"}),
        ("delete", conv, None),
        ("get", f"{conv}/messages", None),
        ("post", f"{conv}/messages", {"content": "hi"}),
        ("post", f"{conv}/messages/msg_x/cancel", None),
        ("get", f"{conv}/messages/msg_x/stream", None),
        ("post", f"{conv}/stream", {"content": "hi"}),
        ("post", f"{conv}/title", None),
        ("get", f"{conv}/messages/msg_x/feedback", None),
        ("put", f"{conv}/messages/msg_x/feedback", {"thumbs_up": True}),
        ("delete", f"{conv}/messages/msg_x/feedback", None),
        ("get", f"{ctx.base}/conversations", None),
        ("get", f"{ctx.base}/conversations/search?q=x", None),
        ("post", f"{ctx.base}/conversations/bulk-delete", {"ids": [conversation.id]}),
        ("delete", f"{ctx.base}/conversations?confirm=true", None),
    ]


def test_another_tenants_urls_are_404_with_my_key(owner, outsider):
    conversation = outsider.conversation()
    for method, url, body in _routes(outsider, conversation):
        response = getattr(owner.client, method)(url, body, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["code"] == "not_found"
    assert Agent.objects.get(id=outsider.agent.id).name == outsider.agent.name
    assert Conversation.objects.filter(id=conversation.id, name=conversation.name).exists()
    assert Agent.objects.filter(tenant=outsider.tenant).count() == 1


def test_another_tenants_ids_under_my_url_are_404(owner, outsider):
    foreign = outsider.conversation()
    foreign_reply = Message.objects.create(tenant=outsider.tenant, conversation=foreign, role="assistant", content="x")
    mine = owner.conversation()
    foreign_agent_routes = [
        ("get", f"{owner.base}/agents/{outsider.agent.id}", None),
        ("patch", f"{owner.base}/agents/{outsider.agent.id}", {"name": "stolen"}),
        ("delete", f"{owner.base}/agents/{outsider.agent.id}", None),
        ("get", f"{owner.base}/agents/{outsider.agent.id}/conversations", None),
        ("post", f"{owner.base}/agents/{outsider.agent.id}/conversations", {"name": "x"}),
        ("get", f"{owner.agent_url}/conversations/{foreign.id}", None),
        ("patch", f"{owner.agent_url}/conversations/{foreign.id}", {"name": "stolen"}),
        ("delete", f"{owner.agent_url}/conversations/{foreign.id}", None),
        ("get", f"{owner.base}/agents/{outsider.agent.id}/conversations/{foreign.id}", None),
        ("get", f"{owner.agent_url}/conversations/{foreign.id}/messages", None),
        ("post", f"{owner.agent_url}/conversations/{foreign.id}/messages", {"content": "hi"}),
        ("post", f"{owner.agent_url}/conversations/{foreign.id}/messages/{foreign_reply.id}/cancel", None),
        ("get", f"{owner.agent_url}/conversations/{foreign.id}/messages/{foreign_reply.id}/stream", None),
        ("post", f"{owner.agent_url}/conversations/{foreign.id}/stream", {"content": "hi"}),
        ("post", f"{owner.agent_url}/conversations/{foreign.id}/title", None),
        (
            "put",
            f"{owner.agent_url}/conversations/{foreign.id}/messages/{foreign_reply.id}/feedback",
            {"thumbs_up": True},
        ),
        ("get", f"{owner.base}/conversations?agent_id={outsider.agent.id}", None),
        ("get", f"{owner.base}/conversations/search?q=x&agent_id={outsider.agent.id}", None),
    ]
    for method, url, body in foreign_agent_routes:
        response = getattr(owner.client, method)(url, body, format="json")
        assert response.status_code == 404, (method, url)
    assert Conversation.objects.filter(id=foreign.id, name=foreign.name).exists()
    assert Conversation.objects.filter(id=mine.id).exists()
    assert Message.objects.filter(conversation=foreign).count() == 1
    # bulk delete with a foreign id reports it as not found and deletes nothing of the outsider's
    response = owner.client.post(f"{owner.base}/conversations/bulk-delete", {"ids": [foreign.id]}, format="json")
    assert response.json() == {"deleted": 0, "failed": [foreign.id]}
    assert Conversation.objects.filter(id=foreign.id).exists()


def test_every_route_without_a_key_is_401(owner, anon):
    conversation = owner.conversation()
    for method, url, body in _routes(owner, conversation):
        response = getattr(anon, method)(url, body, format="json")
        assert response.status_code == 401, (method, url)
