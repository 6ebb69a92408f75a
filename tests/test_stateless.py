"""POST /v1/conversation: the seed's request and response shapes; nothing stored but usage."""

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from agents.models import Agent
from conversations.models import Conversation, Message
from files.models import File
from tenants.models import DailyUsage
from tests.conftest import async_client, wait_until
from tests.openai_server import OpenAIServer
from tests.servers import parse_sse, served

# Replies are produced in worker threads: rows (keys, agents, usage) must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/conversation"
SEED = {
    "messages": [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there!"},
        {"role": "user", "content": "How are you?"},
    ],
    "system_prompt": "You are a helpful assistant.",
    "stream": False,
}


@pytest.fixture(autouse=True)
def _nothing_is_stored():
    yield
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


@pytest.fixture
def llm():
    with OpenAIServer() as server, override_settings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test"):
        yield server


def test_the_seed_example_answers(owner):
    response = owner.client.post(URL, SEED, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["response"].strip()
    assert set(body) == {"success", "response", "citations"}
    usage = DailyUsage.objects.get(tenant=owner.tenant)
    assert usage.requests == 1 and usage.output_tokens > 0


async def test_the_seed_example_streams_the_seed_events(owner):
    response = await async_client(owner).post(URL, {**SEED, "stream": True}, content_type="application/json")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = parse_sse(b"".join([chunk async for chunk in response.streaming_content]))
    assert all(set(event) == {"data"} for event in events)  # no ids on the stateless stream
    data = [event["data"] for event in events]
    assert data[-1] == {"done": True}
    assert set(data[-2]) == {"tokens"} and data[-2]["tokens"] > 0
    assert all(set(d) == {"content"} for d in data[:-2]) and len(data) > 3
    assert "How are you?" in "".join(d["content"] for d in data[:-2])


def test_an_agent_engine_gets_the_whole_history(owner, llm):
    agent = Agent.objects.create(tenant=owner.tenant, name="llm", engine="openai", model="echo")
    response = owner.client.post(URL, {**SEED, "agent_id": agent.id}, format="json")
    assert response.json() == {"success": True, "response": "You said: How are you?.", "citations": []}
    assert llm.requests[-1]["body"]["messages"] == [{"role": "system", "content": "You are a helpful assistant."}] + [
        {"role": m["role"], "content": m["content"]} for m in SEED["messages"]
    ]


def test_without_a_system_prompt_an_agent_keeps_its_own(owner, llm):
    """With agent_id and no system_prompt, the agent's own instructions (a default replaced them)."""
    agent = Agent.objects.create(
        tenant=owner.tenant, name="llm", engine="openai", model="echo", system_prompt="Answer in French."
    )
    body = {key: value for key, value in SEED.items() if key != "system_prompt"}
    assert owner.client.post(URL, {**body, "agent_id": agent.id}, format="json").status_code == 200
    assert llm.requests[-1]["body"]["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert owner.client.post(URL, {**body, "agent_id": agent.id, "system_prompt": "Be brief."}, format="json")
    assert llm.requests[-1]["body"]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_the_default_model_serves_requests_without_an_agent(owner, llm):
    with override_settings(DEFAULT_MODEL="echo"):
        response = owner.client.post(URL, {"messages": [{"role": "user", "content": "Hi"}]}, format="json")
    assert response.json() == {"success": True, "response": "You said: Hi.", "citations": []}
    assert llm.requests[-1]["body"]["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}


async def stream_data(ctx, body) -> list[dict]:
    response = await async_client(ctx).post(URL, body, content_type="application/json")
    assert response.status_code == 200
    return [event["data"] for event in parse_sse(b"".join([chunk async for chunk in response.streaming_content]))]


async def test_reasoning_streams_thinking_first(owner, llm):
    agent = await Agent.objects.acreate(tenant=owner.tenant, name="llm", engine="openai", model="reasoner")
    data = await stream_data(owner, {**SEED, "stream": True, "reasoning": True, "agent_id": agent.id})
    assert data == [
        {"thinking": "Thinking about "},
        {"thinking": "it."},
        {"content": "Answer."},
        {"tokens": 18},
        {"done": True},
    ]


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({}, "messages: This field is required"),
        ({"messages": []}, "messages: This list may not be empty"),
        ({"messages": "hello"}, "messages: Expected a list"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": ["hi"]}, "messages[0]: Invalid data"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "last message"),
        ({"messages": [{"role": "user", "content": "a"}], "stream": "yes"}, "stream: Must be true or false"),
        ({"messages": [{"role": "user", "content": "a"}], "system_prompt": 3}, "system_prompt: Must be a string"),
        ({"messages": [{"role": "user", "content": "a", "files": "f"}]}, "messages[0].files"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_requests_are_400_with_a_clear_error(owner, body, phrase):
    response = owner.client.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert phrase in response.json()["error"]


def test_a_body_that_is_not_json_is_400(owner):
    response = owner.client.post(URL, data="{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["success"] is False and "JSON" in response.json()["error"]


def test_keys_are_required(owner):
    from rest_framework.test import APIClient

    for client in (APIClient(), APIClient(HTTP_AUTHORIZATION="Bearer prl_00000000_nope")):
        response = client.post(URL, SEED, format="json")
        assert response.status_code == 401
        assert response.json()["success"] is False and response.json()["error"]


def test_an_empty_agent_id_is_400_not_ignored(owner):
    response = owner.client.post(URL, {**SEED, "agent_id": ""}, format="json")
    assert response.status_code == 400 and response.json()["success"] is False
    assert "agent_id" in response.json()["error"]


def test_an_unknown_or_foreign_agent_is_404(owner, outsider):
    for agent_id in ("agt_nope", outsider.agent.id):
        response = owner.client.post(URL, {**SEED, "agent_id": agent_id}, format="json")
        assert response.status_code == 404 and response.json()["success"] is False


def test_a_history_over_the_limit_is_413(owner):
    big = {"messages": [{"role": "user", "content": "x" * 1_100_000}]}
    response = owner.client.post(URL, big, format="json")
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    huge = {"messages": [{"role": "user", "content": "x" * 3_000_000}]}
    assert owner.client.post(URL, huge, format="json").status_code == 413


@override_settings(THROTTLE_RATE="2/min")
def test_throttling_is_429_in_the_v1_shape(owner):
    codes = [owner.client.post(URL, SEED, format="json") for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[-1].json()["success"] is False and codes[-1]["Retry-After"]


def test_an_engine_failure_is_502(owner, llm):
    agent = Agent.objects.create(tenant=owner.tenant, name="llm", engine="openai", model="broken")
    response = owner.client.post(URL, {**SEED, "agent_id": agent.id}, format="json")
    assert response.status_code == 502
    assert response.json() == {"success": False, "error": "The model server answered 500."}


async def test_an_engine_failure_mid_stream_is_an_error_event(owner, llm):
    agent = await Agent.objects.acreate(tenant=owner.tenant, name="llm", engine="openai", model="malformed")
    data = await stream_data(owner, {**SEED, "agent_id": agent.id, "stream": True})
    assert data[0] == {"content": "Half"}
    assert set(data[-1]) == {"error"} and "stream broke" in data[-1]["error"]


@pytest.mark.slow
def test_a_disconnect_stops_the_generation(owner, django_db_blocker):
    agent = Agent.objects.create(tenant=owner.tenant, name="llm", engine="openai", model="slow")
    with (
        OpenAIServer() as llm,
        django_db_blocker.unblock(),
        served(OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-test") as base,
    ):
        with httpx.stream(
            "POST",
            f"{base}{URL}",
            json={**SEED, "stream": True, "agent_id": agent.id},
            headers={"Authorization": f"Bearer {owner.secret}"},
            timeout=10,
        ) as response:
            assert b"content" in next(response.iter_bytes())
        wait_until(lambda: llm.aborted, timeout=5, what="the model's stream to be closed")
        assert llm.aborted == 1  # the model's stream was closed long before its 2 s end


POLICY = (
    b"Refund policy. Customers may return any product within 30 days of delivery for a full refund. "
    b"Shipping costs are not refunded. Gift cards cannot be returned."
)


def upload(ctx, name: str, content: bytes):
    return ctx.client.post("/v1/files", {"files": SimpleUploadedFile(name, content)}, format="multipart")


def test_tenant_files_are_uploaded_listed_and_deleted(owner, outsider):
    response = upload(owner, "policy.txt", POLICY)
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    (file,) = body["files"]
    assert file["name"] == "policy.txt" and file["conversation_id"] is None and file["size"] == len(POLICY)
    assert File.objects.get(id=file["file_ref"]).conversation_id is None

    listing = owner.client.get("/v1/files").json()
    assert listing["success"] is True and [f["file_ref"] for f in listing["items"]] == [file["file_ref"]]
    assert outsider.client.get("/v1/files").json()["items"] == []
    assert outsider.client.delete(f"/v1/files/{file['file_ref']}").status_code == 404

    deleted = owner.client.delete(f"/v1/files/{file['file_ref']}")
    assert deleted.status_code == 200 and deleted.json()["success"] is True
    missing = owner.client.delete(f"/v1/files/{file['file_ref']}")
    assert missing.status_code == 404 and missing.json()["success"] is False
    assert not File.objects.exists()


def test_uploads_are_validated_in_the_v1_shape(owner):
    empty = upload(owner, "empty.txt", b"")
    assert empty.status_code == 400 and empty.json()["success"] is False
    with override_settings(FILE_MAX_BYTES=10):
        big = upload(owner, "big.txt", b"x" * 11)
    assert big.status_code == 413 and big.json()["success"] is False
    assert not File.objects.exists()


def test_the_builtin_engine_answers_from_attached_files_with_citations(owner):
    ref = upload(owner, "policy.txt", POLICY).json()["files"][0]["file_ref"]
    question = {"role": "user", "content": "How many days do customers have to return a product?", "files": [ref]}
    response = owner.client.post(URL, {"messages": [question]}, format="json")
    assert response.status_code == 200, response.json()
    answer = response.json()["response"]
    assert "30 days" in answer and "[1]" in answer
    # The sources the [n] markers cite come with the answer.
    cited = response.json()["citations"]
    assert cited[0]["number"] == 1 and cited[0]["source_id"] == ref and "30 days" in cited[0]["snippet"]


def test_the_openai_engine_gets_the_files_text(owner, llm):
    ref = upload(owner, "policy.txt", POLICY).json()["files"][0]["file_ref"]
    agent = Agent.objects.create(
        tenant=owner.tenant, name="llm", engine="openai", model="echo", system_prompt="Be brief."
    )
    question = {"role": "user", "content": "Summarize the policy.", "files": [ref]}
    assert owner.client.post(URL, {"messages": [question], "agent_id": agent.id}, format="json").status_code == 200
    system = llm.requests[-1]["body"]["messages"][0]["content"]
    assert system.startswith("Be brief.")  # the agent's own instructions, then the files
    assert "policy.txt" in system and "within 30 days of delivery" in system


def test_unknown_or_foreign_file_refs_are_400(owner, outsider):
    foreign = upload(outsider, "policy.txt", POLICY).json()["files"][0]["file_ref"]
    for ref in ("file_nope", foreign):
        question = {"role": "user", "content": "Hi", "files": [ref]}
        response = owner.client.post(URL, {"messages": [question]}, format="json")
        assert response.status_code == 400
        assert response.json()["error"].startswith("files:")


def test_at_most_twenty_files_per_conversation(owner):
    question = {"role": "user", "content": "Hi", "files": [f"file_{i}" for i in range(21)]}
    response = owner.client.post(URL, {"messages": [question]}, format="json")
    assert response.status_code == 400 and "At most 20" in response.json()["error"]


def test_an_empty_system_prompt_is_allowed_and_a_number_for_agent_id_is_not(owner):
    question = [{"role": "user", "content": "Hello"}]
    assert owner.client.post(URL, {"messages": question, "system_prompt": ""}, format="json").status_code == 200
    refused = owner.client.post(URL, {"messages": question, "agent_id": 7}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {"success": False, "error": "agent_id: Must be a string."}
