"""Conversations of an end user and by metadata: `user_id` and `metadata` given when creating or renaming,
and `user_id=` / `metadata[key]=value` filters (ANDed) on the agent's list, the tenant's list and search,
paged in activity order; another tenant's conversations never match; bad filters are 400 naming them.
Messages carry the client's metadata too."""

import pytest

from agents.models import Agent
from conversations.models import Message

pytestmark = pytest.mark.django_db


def create(ctx, agent_url: str, **body) -> dict:
    response = ctx.client.post(f"{agent_url}/conversations", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def seeded(owner, outsider):
    """The owner's conversations (newest last), on two agents, and an outsider's with the same user and
    metadata."""
    other = Agent.objects.create(tenant=owner.tenant, name="other agent")
    other_url = f"{owner.base}/agents/{other.id}"
    made = {
        "ann-web": create(owner, owner.agent_url, user_id="ann", metadata={"channel": "web", "priority": 1}),
        "bob-web": create(owner, owner.agent_url, user_id="bob", metadata={"channel": "web", "vip": True}),
        "ann-mail": create(owner, owner.agent_url, name="Refund", user_id="ann", metadata={"channel": "mail"}),
        "ann-other": create(owner, other_url, user_id="ann", metadata={"channel": "web", "priority": "1"}),
        "anonymous": create(owner, owner.agent_url, metadata={"channel": "web"}),
    }
    create(outsider, outsider.agent_url, name="Refund", user_id="ann", metadata={"channel": "web", "priority": 1})
    return made


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["items"]]


def test_lists_filter_by_end_user_and_metadata_values(owner, seeded):
    c = {name: conversation["id"] for name, conversation in seeded.items()}
    agent_list = f"{owner.agent_url}/conversations"
    tenant_list = f"{owner.base}/conversations"
    assert seeded["ann-web"]["user_id"] == "ann" and seeded["anonymous"]["user_id"] == ""
    assert ids(owner.client.get(agent_list, {"user_id": "ann"})) == [c["ann-mail"], c["ann-web"]]
    assert ids(owner.client.get(tenant_list, {"user_id": "ann"})) == [c["ann-other"], c["ann-mail"], c["ann-web"]]
    assert ids(owner.client.get(tenant_list, {"user_id": "ann", "metadata[channel]": "web"})) == [
        c["ann-other"],
        c["ann-web"],
    ]
    # A value matches the string, or the number or boolean it spells.
    assert ids(owner.client.get(tenant_list, {"metadata[priority]": "1"})) == [c["ann-other"], c["ann-web"]]
    assert ids(owner.client.get(tenant_list, {"metadata[vip]": "true"})) == [c["bob-web"]]
    assert ids(owner.client.get(tenant_list, {"metadata[vip]": "false"})) == []
    assert ids(owner.client.get(tenant_list, {"metadata[channel]": "web", "metadata[vip]": "true"})) == [c["bob-web"]]
    assert ids(owner.client.get(tenant_list, {"user_id": "nobody"})) == []
    # Searches narrow the same way.
    search = f"{owner.base}/conversations/search"
    assert ids(owner.client.get(search, {"q": "refund", "user_id": "ann"})) == [c["ann-mail"]]
    assert ids(owner.client.get(search, {"q": "refund", "metadata[channel]": "web"})) == []


def test_a_filtered_list_pages_in_activity_order(owner, seeded):
    url = f"{owner.base}/conversations"
    expected = ids(owner.client.get(url, {"metadata[channel]": "web", "limit": 100}))
    assert len(expected) == 4
    seen, cursor = [], None
    while True:
        params = {"metadata[channel]": "web", "limit": 3, **({"next": cursor} if cursor else {})}
        page = owner.client.get(url, params).json()
        seen += [item["id"] for item in page["items"]]
        if not (cursor := page["next"]):
            break
    assert seen == expected


def test_another_tenants_conversations_never_match(outsider, seeded):
    listed = ids(outsider.client.get(f"{outsider.base}/conversations", {"user_id": "ann", "metadata[priority]": "1"}))
    assert len(listed) == 1 and listed[0] not in {conversation["id"] for conversation in seeded.values()}


def test_user_id_is_changed_or_cleared_by_patch(owner, seeded):
    url = f"{owner.agent_url}/conversations/{seeded['anonymous']['id']}"
    assert owner.client.patch(url, {"user_id": "cy"}, format="json").json()["user_id"] == "cy"
    assert ids(owner.client.get(f"{owner.base}/conversations", {"user_id": "cy"})) == [seeded["anonymous"]["id"]]
    assert owner.client.patch(url, {"user_id": ""}, format="json").json()["user_id"] == ""
    too_long = owner.client.patch(url, {"user_id": "x" * 256}, format="json")
    assert too_long.status_code == 400 and too_long.json()["error"]["message"].startswith("user_id")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"metadata[]": "x"}, "metadata[]"),
        ({"metadata": "x"}, "metadata"),
        ({"metadata[a][b]": "x"}, "metadata[a][b]"),
        ({f"metadata[k{i}]": "x" for i in range(11)}, "metadata"),
        ({"metadata[k]": "x" * 501}, "metadata[k]"),
        ({"user_id": "x" * 256}, "user_id"),
    ],
    ids=["empty-key", "no-key", "nested", "eleven", "long-value", "long-user"],
)
def test_a_malformed_filter_is_400_naming_it(owner, params, named):
    for url in (f"{owner.agent_url}/conversations", f"{owner.base}/conversations"):
        response = owner.client.get(url, params)
        assert response.status_code == 400 and response.json()["error"]["message"].startswith(f"{named}:"), url
    response = owner.client.get(f"{owner.base}/conversations/search", {"q": "x", **params})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(f"{named}:")


@pytest.mark.django_db(transaction=True)  # (the turn's view is async: its queries run on another connection)
def test_a_message_keeps_the_clients_metadata(owner):
    conversation = owner.conversation()
    url = f"{owner.conversation_url(conversation)}/messages"
    posted = owner.client.post(url, {"content": "hello", "metadata": {"client_message_id": "c-1"}}, format="json")
    assert posted.status_code == 200, posted.json()
    question, reply = posted.json()["messages"]
    assert question["metadata"] == {"client_message_id": "c-1"} and reply["metadata"] == {}
    assert Message.objects.get(id=question["id"]).metadata == {"client_message_id": "c-1"}
    assert owner.client.get(url).json()["items"][0]["metadata"] == {"client_message_id": "c-1"}
    regenerated = owner.client.post(url, {"regenerate": reply["id"], "metadata": {"a": 1}}, format="json")
    assert regenerated.status_code == 400 and regenerated.json()["error"]["message"].startswith("regenerate")
    not_an_object = owner.client.post(url, {"content": "x", "metadata": [1]}, format="json")
    assert not_an_object.status_code == 400 and not_an_object.json()["error"]["message"].startswith("metadata")


def test_a_filtered_search_ranks_the_filtered_conversations_messages(owner, monkeypatch):
    """Search ranks only the newest matching messages: among the filtered conversations', not all of them
    (other users' newer messages must not take every place)."""
    monkeypatch.setattr("conversations.search.CANDIDATE_MESSAGES", 3)
    anns = create(owner, owner.agent_url, name="Chat", user_id="ann")
    Message.objects.create(tenant=owner.tenant, conversation_id=anns["id"], role="user", content="invoice overdue")
    for i in range(6):
        other = create(owner, owner.agent_url, name="Chat", user_id=f"user-{i}")
        Message.objects.create(tenant=owner.tenant, conversation_id=other["id"], role="user", content="invoice paid")
    found = ids(owner.client.get(f"{owner.base}/conversations/search", {"q": "invoice", "user_id": "ann"}))
    assert found == [anns["id"]]
