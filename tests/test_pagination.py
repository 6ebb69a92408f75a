import base64

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation

pytestmark = pytest.mark.django_db


def _seed(owner, count: int) -> list[str]:
    Conversation.objects.bulk_create(
        Conversation(tenant=owner.tenant, agent=owner.agent, name=f"c{i}") for i in range(count)
    )
    return list(Conversation.objects.filter(agent=owner.agent).values_list("id", flat=True))


def test_walking_all_pages_while_inserting_returns_each_old_row_once(owner):
    existing = set(_seed(owner, 250))
    url = f"{owner.agent_url}/conversations"
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 7, **({"next": cursor} if cursor else {})}
        body = owner.client.get(url, params).json()
        assert len(body["items"]) <= 7
        seen += [c["id"] for c in body["items"]]
        owner.conversation(f"new during page {pages}")  # newer activity: must not disturb the walk
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    old_seen = [cid for cid in seen if cid in existing]
    assert len(old_seen) == len(existing) == 250
    assert set(old_seen) == existing
    assert pages == 36


def test_pages_follow_the_order_of_the_list(owner):
    _seed(owner, 30)
    url = f"{owner.agent_url}/conversations"
    whole = owner.client.get(url, {"limit": 100}).json()
    assert whole["next"] is None
    first = owner.client.get(url, {"limit": 10}).json()
    second = owner.client.get(url, {"limit": 10, "next": first["next"]}).json()
    assert [c["id"] for c in first["items"] + second["items"]] == [c["id"] for c in whole["items"][:20]]


def test_default_limit_is_20(owner):
    _seed(owner, 25)
    body = owner.client.get(f"{owner.agent_url}/conversations").json()
    assert len(body["items"]) == 20
    assert body["next"]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", ""])
def test_it_rejects_bad_limits_naming_limit(owner, limit):
    response = owner.client.get(f"{owner.agent_url}/conversations", {"limit": limit})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"].startswith("limit")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!!",
        base64.urlsafe_b64encode(b"[1]").decode(),
        base64.urlsafe_b64encode(b'["not a date", "conv_x"]').decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[null, null]").decode(),
        base64.urlsafe_b64encode(b'["2024-01-01T00:00:00Z", "conv_\\u0000"]').decode(),
    ],
)
def test_it_rejects_malformed_cursors(owner, cursor):
    response = owner.client.get(f"{owner.agent_url}/conversations", {"next": cursor})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("next")


@pytest.mark.parametrize(
    "values",
    [
        b"[1" + b"0" * 400 + b', "2024-01-01T00:00:00Z", "conv_x"]',
        b'[1.5, "2024-01-01T00:00:00Z", "conv_\\u0000"]',
    ],
    ids=["a rank too large for a float", "a NUL in the id"],
)
def test_search_rejects_malformed_cursors(owner, values):
    cursor = base64.urlsafe_b64encode(values).decode()
    response = owner.client.get(f"{owner.base}/conversations/search", {"q": "report", "next": cursor})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("next")


@pytest.mark.parametrize(("path", "queries"), [("/agents", 2), ("/agents/{agent}/conversations", 3)])
def test_list_query_count_does_not_depend_on_page_size(owner, django_assert_num_queries, path, queries):
    _seed(owner, 120)
    for i in range(120):
        type(owner.agent).objects.create(tenant=owner.tenant, name=f"agent {i}")
    url = owner.base + path.format(agent=owner.agent.id)
    owner.client.get(url, {"limit": 1})  # warm up: last_used_at write, caches
    with django_assert_num_queries(queries) as small:
        assert len(owner.client.get(url, {"limit": 1}).json()["items"]) == 1
    with django_assert_num_queries(queries) as large:
        assert len(owner.client.get(url, {"limit": 100}).json()["items"]) == 100
    assert len(small.captured_queries) == len(large.captured_queries)


def test_messages_with_tool_calls_and_citations_cost_the_same_queries_at_any_page_size(
    owner, django_assert_num_queries
):
    from conversations.models import Citation, Message, ToolCall

    conversation = owner.conversation()
    parent = None
    for i in range(30):
        question = Message.objects.create(
            tenant=owner.tenant, conversation=conversation, role="user", content=f"q{i}", parent=parent
        )
        parent = Message.objects.create(
            tenant=owner.tenant, conversation=conversation, role="assistant", content=f"a{i} [1]", parent=question
        )
        ToolCall.objects.create(tenant=owner.tenant, message=parent, call_id="call_1", position=0, name="run_sql",
                                arguments={"query": "select 1"}, status="ok", content="1")  # fmt: skip
        Citation.objects.create(tenant=owner.tenant, message=parent, number=1, source_id="file_x", snippet="s")
    conversation.current_message = parent
    conversation.save()
    url = f"{owner.conversation_url(conversation)}/messages"
    owner.client.get(url, {"limit": 2})  # warm up
    with CaptureQueriesContext(connection) as small:
        page = owner.client.get(url, {"limit": 2}).json()["items"]
    with CaptureQueriesContext(connection) as large:
        full = owner.client.get(url, {"limit": 60}).json()["items"]
    assert len(page) == 2 and len(full) == 60
    assert full[1]["tool_calls"][0]["name"] == "run_sql" and full[1]["citations"][0]["source_id"] == "file_x"
    assert len(small.captured_queries) == len(large.captured_queries) <= 6  # (key, conversation, page, prefetches)
