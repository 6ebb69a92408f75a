import pytest

from conversations.models import Conversation

pytestmark = pytest.mark.django_db


def test_it_creates_a_conversation(owner):
    url = f"{owner.agent_url}/conversations"
    response = owner.client.post(url, {"name": "Q3 reconciliation"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "Q3 reconciliation"
    assert body["agent_id"] == owner.agent.id
    assert body["message_count"] == 0
    assert body["id"].startswith("conv_")
    assert {"created_at", "updated_at", "metadata"} <= set(body)
    assert Conversation.objects.get(id=body["id"]).tenant_id == owner.tenant.id


@pytest.mark.parametrize(
    "payload",
    [{"name": ""}, {"name": "x" * 201}, {"name": 5}, {"name": "ok", "metadata": [1, 2]}, {"name": None}],
)
def test_it_rejects_invalid_conversations(owner, payload):
    response = owner.client.post(f"{owner.agent_url}/conversations", payload, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert Conversation.objects.count() == 0


def test_it_rejects_a_body_that_is_not_json(owner):
    response = owner.client.post(f"{owner.agent_url}/conversations", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_it_rejects_an_unsupported_content_type(owner):
    response = owner.client.post(f"{owner.agent_url}/conversations", data="name=x", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_it_lists_newest_activity_first(owner):
    first, second, third = (owner.conversation(name) for name in ("a", "b", "c"))
    Conversation.objects.filter(id=first.id).update(updated_at=third.updated_at.replace(year=2100))
    response = owner.client.get(f"{owner.agent_url}/conversations")
    assert [c["id"] for c in response.json()["items"]] == [first.id, third.id, second.id]


def test_it_lists_only_the_agents_conversations(owner):
    other_agent = type(owner.agent).objects.create(tenant=owner.tenant, name="other")
    mine = owner.conversation("mine")
    owner.conversation("theirs", agent=other_agent)
    response = owner.client.get(f"{owner.agent_url}/conversations")
    assert [c["id"] for c in response.json()["items"]] == [mine.id]


def test_it_gets_renames_and_deletes(owner):
    conversation = owner.conversation("old")
    url = owner.conversation_url(conversation)
    assert owner.client.get(url).json()["name"] == "old"

    response = owner.client.patch(url, {"name": "new", "metadata": {"k": "v"}}, format="json")
    assert response.status_code == 200
    assert response.json()["name"] == "new"
    assert response.json()["metadata"] == {"k": "v"}

    response = owner.client.delete(url)
    assert response.status_code == 200
    assert response.json()["id"] == conversation.id
    assert response.json()["name"] == "new"
    assert not Conversation.objects.filter(id=conversation.id).exists()
    assert owner.client.get(url).status_code == 404


def test_a_conversation_under_the_wrong_agent_is_404(owner):
    conversation = owner.conversation()
    other_agent = type(owner.agent).objects.create(tenant=owner.tenant, name="other")
    response = owner.client.get(f"{owner.base}/agents/{other_agent.id}/conversations/{conversation.id}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_renaming_a_conversation_deleted_meanwhile_is_404_not_500(owner):
    """The fuzzer's PATCH raced a DELETE: the update found no row, and save() raised a server error."""
    from conversations.services import conversation_update
    from core.errors import NotFound

    conversation = owner.conversation("old")
    Conversation.objects.filter(pk=conversation.pk).delete()  # by another request, after this one read it
    with pytest.raises(NotFound):
        conversation_update(conversation=conversation, data={"name": "new"})
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_title_is_an_alias_of_name_and_a_misspelt_field_is_refused(owner):
    """The seeds call a conversation's name its title: either word names it (not both); a field the API does
    not know (here the old silent no-op, `PATCH {"titel": ...}`) is 400 naming it, and changes nothing."""
    created = owner.client.post(f"{owner.agent_url}/conversations", {"title": "Invoices"}, format="json")
    assert created.status_code == 201 and created.json()["name"] == "Invoices"
    url = f"{owner.agent_url}/conversations/{created.json()['id']}"
    renamed = owner.client.patch(url, {"title": "March invoices"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "March invoices"
    assert renamed.json()["title_source"] == "user"
    both = owner.client.patch(url, {"title": "A", "name": "B"}, format="json")
    assert both.status_code == 400 and both.json()["error"]["message"].startswith("title: An alias of `name`")
    misspelt = owner.client.patch(url, {"titel": "Typo"}, format="json")
    assert misspelt.status_code == 400
    assert misspelt.json()["error"] == {"code": "invalid", "message": "titel: Unknown field.",
                                        "details": {"titel": ["Unknown field."]}}  # fmt: skip
    invalid = owner.client.patch(url, {"title": ""}, format="json")
    assert invalid.status_code == 400 and invalid.json()["error"]["message"].startswith("title:")
    assert owner.client.get(url).json()["name"] == "March invoices"
