"""Tenant-wide conversation management: list, search, bulk delete, delete all, titles, feedback."""

import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings
from django.utils import timezone

from agents.models import Agent
from conversations import search as search_module
from conversations.models import Conversation, Feedback, Message
from tests.openai_server import OpenAIServer
from tests.servers import BASE_DIR
from turns.log import stream_log

# Posting messages runs generations in worker threads: rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def add_message(ctx, conversation, content: str, role: str = "user") -> Message:
    return Message.objects.create(tenant=ctx.tenant, conversation=conversation, role=role, content=content)


def search(ctx, **params):
    return ctx.client.get(f"{ctx.base}/conversations/search", params)


@pytest.mark.parametrize("value", ["1.5", "yes", "0", ""])
def test_search_highlights_takes_true_or_false_only(owner, value):
    response = search(owner, q="x", highlights=value)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("highlights")
    assert search(owner, q="x", highlights="false").status_code == 200


def test_the_tenant_list_spans_agents(owner, outsider):
    gpt = Agent.objects.create(tenant=owner.tenant, name="gpt", engine="openai", model="gpt-4o-mini")
    first = owner.conversation("first")
    second = owner.conversation("second", agent=gpt)
    outsider.conversation("theirs")
    body = owner.client.get(f"{owner.base}/conversations").json()
    assert [c["id"] for c in body["items"]] == [second.id, first.id]
    # No reply yet: no model has produced anything (the agent's is not shown as if it had; test_producers).
    assert (body["items"][0]["model"], body["items"][0]["engine"], body["items"][0]["agent_id"]) == ("", "", gpt.id)
    assert body["items"][1]["engine"] == "" and body["items"][1]["agent_id"] == owner.agent.id
    filtered = owner.client.get(f"{owner.base}/conversations", {"agent_id": gpt.id}).json()["items"]
    assert [c["id"] for c in filtered] == [second.id]
    assert owner.client.get(f"{owner.base}/conversations", {"agent_id": outsider.agent.id}).status_code == 404


def test_search_finds_titles_and_content_ranked_and_highlighted(owner, outsider):
    by_title = owner.conversation("Invoice reconciliation for March")
    add_message(owner, by_title, "Let us begin.")
    by_content = owner.conversation("Chat")
    add_message(owner, by_content, "The invoice total is 1,240.00 EUR and the invoice is late.")
    unrelated = owner.conversation("Holidays")
    add_message(owner, unrelated, "Where should we travel in May?")
    foreign = outsider.conversation("Invoice of the outsider")
    add_message(outsider, foreign, "invoice invoice invoice")

    body = search(owner, q="invoice").json()
    ids = [hit["id"] for hit in body["items"]]
    assert set(ids) == {by_title.id, by_content.id}
    hits = {hit["id"]: hit for hit in body["items"]}
    assert hits[by_title.id]["title"] == "Invoice reconciliation for March"
    assert hits[by_title.id]["agent_id"] == owner.agent.id
    assert any("<mark>Invoice</mark>" in h for h in hits[by_title.id]["highlights"])
    assert any("<mark>invoice</mark> total" in h for h in hits[by_content.id]["highlights"])
    assert body["next"] is None


def test_search_ranks_better_matches_first(owner):
    weak = owner.conversation("Notes")
    add_message(owner, weak, "The budget is mentioned once among many other unrelated words in a long sentence here.")
    strong = owner.conversation("Budget review")
    add_message(owner, strong, "budget budget: the budget")
    assert [hit["id"] for hit in search(owner, q="budget").json()["items"]] == [strong.id, weak.id]


def test_search_escapes_html_outside_the_marks(owner):
    conversation = owner.conversation("Chat")
    add_message(owner, conversation, "<script>alert('x')</script> the deadline is <b>Friday</b>")
    highlight = search(owner, q="deadline").json()["items"][0]["highlights"][0]
    assert highlight.replace("<mark>", "").replace("</mark>", "").count("<") == 0
    assert "alert('x')&lt;/script&gt;" in highlight
    assert "&lt;b&gt;Friday" in highlight
    assert "<mark>deadline</mark>" in highlight


def test_search_supports_phrases_and_exclusions(owner):
    both = owner.conversation("a")
    add_message(owner, both, "red apples and green pears")
    apples = owner.conversation("b")
    add_message(owner, apples, "green apples only")
    assert {h["id"] for h in search(owner, q='"green apples"').json()["items"]} == {apples.id}
    assert {h["id"] for h in search(owner, q="apples -pears").json()["items"]} == {apples.id}


def test_search_respects_the_agent_filter_and_pages(owner):
    other_agent = Agent.objects.create(tenant=owner.tenant, name="other")
    mine = [owner.conversation(f"report {i}") for i in range(5)]
    owner.conversation("report elsewhere", agent=other_agent)
    first = search(owner, q="report", agent_id=owner.agent.id, limit=3).json()
    second = search(owner, q="report", agent_id=owner.agent.id, limit=3, next=first["next"]).json()
    found = [h["id"] for h in first["items"] + second["items"]]
    assert sorted(found) == sorted(c.id for c in mine) and len(found) == 5
    assert second["next"] is None
    assert search(owner, q="report", highlights="false").json()["items"][0]["highlights"] == []


@pytest.mark.parametrize(
    "common_share, window_share",
    [(0.1, 0.05), (0.5, 0.05), (0.5, 0.5)],
    ids=["newest first", "recent window, then older matches", "every match"],
)
def test_search_ranks_the_newest_matching_messages_whichever_way_it_finds_them(
    owner, monkeypatch, common_share, window_share
):
    # One match among the 10 newest messages is a share of 0.1: each parametrization sends it another way.
    monkeypatch.setattr(search_module, "PROBE_MESSAGES", 10)
    monkeypatch.setattr(search_module, "CANDIDATE_MESSAGES", 3)
    monkeypatch.setattr(search_module, "COMMON_SHARE", common_share)
    monkeypatch.setattr(search_module, "WINDOW_SHARE", window_share)
    now = timezone.now()
    matched = {}
    for days in (300, 200, 100, 0):
        conversation = owner.conversation("Chat")
        message = add_message(owner, conversation, "we hit the rate limit again")
        Message.objects.filter(id=message.id).update(created_at=now - timedelta(days=days, seconds=90))
        matched[days] = conversation.id
    noise = owner.conversation("Chat")
    for minutes in range(12):
        message = add_message(owner, noise, "nothing to see here")
        Message.objects.filter(id=message.id).update(created_at=now - timedelta(minutes=minutes))

    # The 3 newest matches are ranked; the 4th, older, is left out whatever found them.
    found = {hit["id"] for hit in search(owner, q='"rate limit"').json()["items"]}
    assert found == {matched[0], matched[100], matched[200]}


@pytest.mark.parametrize(
    "q",
    ["x" * 10_000, "!!! ??? ...", "the and of", "'; DROP TABLE conversations_message; --", "a & | ! :* ( <->", "\\x00"],
)
def test_odd_queries_answer_200(owner, q):
    add_message(owner, owner.conversation("Chat"), "some ordinary words")
    response = search(owner, q=q)
    assert response.status_code == 200
    assert response.json()["items"] == []


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "   "}, {"q": "x", "limit": "0"}, {"q": "x", "next": "bad"}])
def test_search_rejects_missing_queries_and_bad_paging(owner, params):
    response = search(owner, **params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_bulk_delete_reports_what_it_could_not_delete(owner, outsider):
    mine = [owner.conversation(str(i)) for i in range(3)]
    foreign = outsider.conversation("theirs")
    ids = [mine[0].id, mine[1].id, "conv_missing", foreign.id]
    response = owner.client.post(f"{owner.base}/conversations/bulk-delete", {"ids": ids}, format="json")
    assert response.status_code == 200
    assert response.json() == {"deleted": 2, "failed": ["conv_missing", foreign.id]}
    assert list(Conversation.objects.filter(tenant=owner.tenant).values_list("id", flat=True)) == [mine[2].id]
    assert Conversation.objects.filter(id=foreign.id).exists()


@pytest.mark.parametrize(
    "body", [{}, {"ids": []}, {"ids": ["a"] * 2}, {"ids": [f"c{i}" for i in range(101)]}, {"ids": [1, 2]}, {"ids": "x"}]
)
def test_bulk_delete_validates_ids(owner, body):
    conversation = owner.conversation()
    response = owner.client.post(f"{owner.base}/conversations/bulk-delete", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("ids")
    assert Conversation.objects.filter(id=conversation.id).exists()


def test_delete_all_needs_confirmation_and_spares_other_tenants(owner, outsider):
    for i in range(3):
        owner.conversation(str(i))
    theirs = outsider.conversation()
    assert owner.client.delete(f"{owner.base}/conversations").status_code == 400
    assert owner.client.delete(f"{owner.base}/conversations?confirm=yes").status_code == 400
    assert Conversation.objects.filter(tenant=owner.tenant).count() == 3
    response = owner.client.delete(f"{owner.base}/conversations?confirm=true")
    assert response.status_code == 200 and response.json() == {"deleted": 3}
    assert not Conversation.objects.filter(tenant=owner.tenant).exists()
    assert Conversation.objects.filter(id=theirs.id).exists()


def test_deleting_a_conversation_cancels_its_running_generation(owner):
    conversation = owner.conversation()
    user = add_message(owner, conversation, "q")
    running = Message.objects.create(
        tenant=owner.tenant, conversation=conversation, parent=user, role="assistant", status="in_progress"
    )
    async_to_sync(stream_log().append)(running.id, 0, {"message": {"id": running.id}})  # its live log
    response = owner.client.post(f"{owner.base}/conversations/bulk-delete", {"ids": [conversation.id]}, format="json")
    assert response.json()["deleted"] == 1
    assert async_to_sync(stream_log().is_cancel_requested)(running.id)
    assert not Message.objects.filter(id=running.id).exists()


def post(ctx, conversation, body):
    return ctx.client.post(f"{ctx.conversation_url(conversation)}/messages", body, format="json")


def test_a_conversation_without_a_name_gets_a_proposed_title(owner):
    created = owner.client.post(f"{owner.agent_url}/conversations", {}, format="json").json()
    assert created["name"] == "" and created["title_source"] == "proposed"
    conversation = Conversation.objects.get(id=created["id"])
    post(owner, conversation, {"content": "Please summarize the Q3 invoice totals per region"})
    conversation.refresh_from_db()
    assert conversation.name == "Summarize Q3 invoice totals per region"
    assert conversation.title_source == "proposed"
    post(owner, conversation, {"content": "Something else entirely"})
    conversation.refresh_from_db()
    assert conversation.name == "Summarize Q3 invoice totals per region"


def test_a_users_title_is_never_replaced(owner):
    named = owner.conversation("My own title")
    post(owner, named, {"content": "Please summarize the invoices"})
    named.refresh_from_db()
    assert named.name == "My own title"
    unnamed_id = owner.client.post(f"{owner.agent_url}/conversations", {}, format="json").json()["id"]
    unnamed = Conversation.objects.get(id=unnamed_id)
    response = owner.client.patch(owner.conversation_url(unnamed), {"name": "Chosen"}, format="json")
    assert response.json()["title_source"] == "user"
    post(owner, unnamed, {"content": "Please summarize the invoices"})
    unnamed.refresh_from_db()
    assert unnamed.name == "Chosen"


def test_proposing_a_title_does_not_save_it(owner):
    conversation = owner.conversation("Kept")
    url = f"{owner.conversation_url(conversation)}/title"
    assert owner.client.post(url).status_code == 400  # nothing to propose from yet
    add_message(owner, conversation, "How do I reset my router password?")
    response = owner.client.post(url)
    assert response.status_code == 200
    assert response.json() == {"title": "Reset router password"}
    conversation.refresh_from_db()
    assert conversation.name == "Kept"


def test_the_openai_engine_asks_the_model_for_a_title(owner):
    owner.agent.engine, owner.agent.model = "openai", "title"
    owner.agent.save()
    conversation = owner.conversation("x")
    add_message(owner, conversation, "What were the invoice totals last quarter?")
    with OpenAIServer() as llm, override_settings(OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="k"):
        response = owner.client.post(f"{owner.conversation_url(conversation)}/title")
        assert response.json() == {"title": "Quarterly invoice totals"}
        assert llm.requests[-1]["body"]["messages"][1]["content"] == "What were the invoice totals last quarter?"
        owner.agent.model = "broken"
        owner.agent.save()
        failed = owner.client.post(f"{owner.conversation_url(conversation)}/title")
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "engine_error"


def feedback_url(ctx, conversation, message_id):
    return f"{ctx.conversation_url(conversation)}/messages/{message_id}/feedback"


def test_feedback_is_stored_replaced_read_and_removed(owner):
    conversation = owner.conversation()
    turn = post(owner, conversation, {"content": "hi"}).json()
    reply_id = turn["current_message_id"]
    url = feedback_url(owner, conversation, reply_id)
    assert owner.client.get(url).status_code == 404

    response = owner.client.put(url, {"thumbs_up": True, "comment": "Great"}, format="json")
    assert response.status_code == 200
    assert response.json()["thumbs_up"] is True and response.json()["comment"] == "Great"
    response = owner.client.put(url, {"thumbs_up": False, "category": "inaccurate"}, format="json")
    assert response.json()["category"] == "inaccurate" and response.json()["comment"] == ""
    assert Feedback.objects.filter(message_id=reply_id).count() == 1
    assert owner.client.get(url).json()["thumbs_up"] is False

    state = owner.client.get(owner.conversation_url(conversation)).json()
    assert state["messages"][reply_id]["feedback"]["category"] == "inaccurate"
    listed = owner.client.get(f"{owner.conversation_url(conversation)}/messages").json()["items"]
    assert listed[1]["feedback"]["thumbs_up"] is False and listed[0]["feedback"] is None

    assert owner.client.delete(url).status_code == 204
    assert owner.client.get(url).status_code == 404
    assert not Feedback.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"thumbs_up": False}, "category"),
        ({"thumbs_up": False, "category": ""}, "category"),
        ({"thumbs_up": False, "category": "rude"}, "category"),
        ({"thumbs_up": True, "comment": "x" * 2001}, "comment"),
        ({}, "thumbs_up"),
    ],
)
def test_bad_feedback_is_400(owner, body, field):
    conversation = owner.conversation()
    reply_id = post(owner, conversation, {"content": "hi"}).json()["current_message_id"]
    response = owner.client.put(feedback_url(owner, conversation, reply_id), body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(field)
    assert not Feedback.objects.exists()


def test_feedback_on_a_user_or_foreign_message_is_refused(owner, outsider):
    conversation = owner.conversation()
    user_id = post(owner, conversation, {"content": "hi"}).json()["messages"][0]["id"]
    response = owner.client.put(feedback_url(owner, conversation, user_id), {"thumbs_up": True}, format="json")
    assert response.status_code == 400
    foreign = outsider.conversation()
    foreign_reply = add_message(outsider, foreign, "x", role="assistant")
    response = owner.client.put(
        f"{owner.agent_url}/conversations/{foreign.id}/messages/{foreign_reply.id}/feedback",
        {"thumbs_up": True},
        format="json",
    )
    assert response.status_code == 404
    assert not Feedback.objects.exists()


def test_options_on_feedback_describes_it_and_hides_another_tenants(owner, outsider):
    """OPTIONS answered 500 (DRF's metadata asked the viewset for an object it could not find)."""
    conversation = owner.conversation()
    reply_id = post(owner, conversation, {"content": "hi"}).json()["current_message_id"]
    url = feedback_url(owner, conversation, reply_id)

    before = owner.client.options(url)
    owner.client.put(url, {"thumbs_up": True}, format="json")
    after = owner.client.options(url)

    for response in (before, after):
        assert response.status_code == 200 and response.json()["renders"] == ["application/json"]
    assert "thumbs_up" in after.json()["actions"]["PUT"]  # (described once there is feedback to replace)
    foreign = outsider.conversation()
    foreign_reply = add_message(outsider, foreign, "x", role="assistant")
    hidden = owner.client.options(f"{owner.agent_url}/conversations/{foreign.id}/messages/{foreign_reply.id}/feedback")
    assert hidden.status_code == 404


@pytest.mark.slow
def test_make_stop_stops_the_embedded_postgresql_whatever_user_runs_it():
    """`make stop` (python -m config.embedded stop): as root pgserver runs PostgreSQL as its own user."""
    directory = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    directory.chmod(0o755)  # (reachable by pgserver's user when the tests run as root)
    data = directory / "pgdata"
    python = [sys.executable, "-W", "ignore"]
    try:
        start = "from pathlib import Path; from config.embedded import embedded_database as e; e(Path('%s'))"
        subprocess.run([*python, "-c", start % data], cwd=BASE_DIR, check=True, timeout=120)
        assert (data / "postmaster.pid").exists()

        stop = [*python, "-m", "config.embedded", "stop", str(data)]
        stopped = subprocess.run(stop, cwd=BASE_DIR, capture_output=True, text=True, timeout=60)
        again = subprocess.run(stop, cwd=BASE_DIR, capture_output=True, text=True, timeout=60)

        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        assert not (data / "postmaster.pid").exists()
        assert again.returncode == 0 and "not running" in again.stdout
    finally:
        subprocess.run([*python, "-m", "config.embedded", "stop", str(data)], cwd=BASE_DIR, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
