import pytest

from agents.models import Agent

pytestmark = pytest.mark.django_db


def test_it_creates_a_builtin_agent_by_default(owner):
    response = owner.client.post(f"{owner.base}/agents", {"name": "Helper"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["engine"] == "builtin"
    assert body["id"].startswith("agt_")
    assert Agent.objects.get(id=body["id"]).tenant_id == owner.tenant.id


def test_it_creates_an_openai_agent_with_options(owner):
    payload = {
        "name": "GPT",
        "engine": "openai",
        "model": "gpt-4o-mini",
        "system_prompt": "Be brief.",
        "options": {"temperature": 0.2, "max_tokens": 500, "history_tokens": 4000, "tools": ["search_files"]},
    }
    response = owner.client.post(f"{owner.base}/agents", payload, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["options"]["tools"] == ["search_files"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "a", "engine": "openai"}, "model"),
        ({"name": "a", "engine": "magic"}, "engine"),
        ({"name": "a", "options": {"temperature": 5}}, "options"),
        ({"name": "a", "options": {"temperature": False}}, "options"),  # not 0.0
        ({"name": "a", "options": {"temperature": "0.5"}}, "options"),
        ({"name": "a", "options": {"max_tokens": True}}, "options"),  # not 1
        ({"name": "a", "options": {"max_tokens": 2.5}}, "options"),
        ({"name": "a", "options": {"on_crash": "retry"}}, "options"),
        ({"name": "a", "options": {"unknown": 1}}, "options"),
        ({"name": "a", "options": "fast"}, "options"),
    ],
)
def test_it_rejects_invalid_agents_naming_the_field(owner, payload, field):
    response = owner.client.post(f"{owner.base}/agents", payload, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["details"]
    assert error["message"].startswith(field)


def test_it_patches_an_agent(owner):
    response = owner.client.patch(owner.agent_url, {"name": "Renamed", "options": {"chunk_delay_ms": 5}}, format="json")
    assert response.status_code == 200
    owner.agent.refresh_from_db()
    assert owner.agent.name == "Renamed"
    assert owner.agent.options == {"chunk_delay_ms": 5}


def test_it_refuses_switching_to_openai_without_a_model(owner):
    response = owner.client.patch(owner.agent_url, {"engine": "openai"}, format="json")
    assert response.status_code == 400
    assert "model" in response.json()["error"]["details"]


def test_it_deletes_an_agent_with_its_conversations(owner):
    conversation = owner.conversation()
    response = owner.client.delete(owner.agent_url)
    assert response.status_code == 200
    assert response.json()["id"] == owner.agent.id
    assert not Agent.objects.filter(id=owner.agent.id).exists()
    assert not type(conversation).objects.filter(id=conversation.id).exists()


def test_put_is_not_allowed(owner):
    response = owner.client.put(owner.agent_url, {"name": "x"}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_operators_choose_the_models_tenants_may_use(owner, settings):
    settings.OPENAI_MODELS = ["gpt-4o-mini"]
    settings.DEFAULT_MODEL = "house-model"
    url = f"{owner.base}/agents"
    refused = owner.client.post(url, {"name": "a", "engine": "openai", "model": "gpt-4-expensive"}, format="json")
    assert refused.status_code == 400
    assert "gpt-4o-mini" in refused.json()["error"]["message"]
    for model in ("gpt-4o-mini", "house-model"):
        assert (
            owner.client.post(url, {"name": "a", "engine": "openai", "model": model}, format="json").status_code == 201
        )


def test_a_names_length_is_measured_as_sent_as_the_schema_says(owner):
    """maxLength 200 in the schema: 201 characters are 400 even when trimming would leave 200."""
    response = owner.client.post(f"{owner.base}/agents", {"name": "\n" + "x" * 200}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["name"] == ["Ensure this field has no more than 200 characters."]
    response = owner.client.post(f"{owner.base}/agents", {"name": "  Support  "}, format="json")
    assert response.status_code == 201 and response.json()["name"] == "Support"
