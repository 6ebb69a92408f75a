"""The tenant's feedback for review: every rating with its question and reply, newest first, filtered by
period and verdict, paged as JSON or whole as CSV; another tenant's never shows."""

import csv
import datetime
import io

import pytest
from asgiref.sync import async_to_sync

from conversations.models import Feedback, Message

pytestmark = pytest.mark.django_db


def rated(ctx, question: str, answer: str, *, thumbs_up: bool, category: str = "", comment: str = "", days_ago=0):
    conversation = ctx.conversation()
    asked = Message.objects.create(tenant=ctx.tenant, conversation=conversation, role="user", content=question)
    reply = Message.objects.create(tenant=ctx.tenant, conversation=conversation, role="assistant", content=answer,
                                   parent=asked, model="gpt-4o-mini")  # fmt: skip
    feedback = Feedback.objects.create(
        tenant=ctx.tenant, message=reply, thumbs_up=thumbs_up, category=category, comment=comment
    )
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days_ago)
    Feedback.objects.filter(pk=feedback.pk).update(updated_at=when, created_at=when)
    return reply


async def read(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])  # (an async stream: no thread holds it)


@pytest.fixture
def reviews(owner, outsider):
    return {
        "old-down": rated(owner, "Q1?", "A1.", thumbs_up=False, category="inaccurate", days_ago=10),
        "up": rated(owner, "Q2?", "A2.", thumbs_up=True, days_ago=1),
        "down": rated(owner, "Total?", "=SUM(A1:A9)", thumbs_up=False, category="incomplete", comment="Too short"),
        "theirs": rated(outsider, "Their question?", "Their answer.", thumbs_up=False, category="other"),
    }


def test_feedback_is_listed_with_its_question_and_reply_newest_first(owner, reviews):
    url = f"{owner.base}/feedback"
    items = owner.client.get(url).json()["items"]
    assert [item["message_id"] for item in items] == [reviews[k].id for k in ("down", "up", "old-down")]
    assert {k: items[0][k] for k in ("question", "answer", "model", "thumbs_up", "category", "comment")} == {
        "question": "Total?", "answer": "=SUM(A1:A9)", "model": "gpt-4o-mini", "thumbs_up": False,
        "category": "incomplete", "comment": "Too short",
    }  # fmt: skip
    assert items[0]["conversation_id"] == reviews["down"].conversation_id
    assert items[0]["agent_id"] == owner.agent.id
    downs = owner.client.get(url, {"thumbs_up": "false"}).json()["items"]
    assert [item["message_id"] for item in downs] == [reviews["down"].id, reviews["old-down"].id]
    today = datetime.datetime.now(datetime.UTC).date()
    recent = owner.client.get(url, {"from": str(today - datetime.timedelta(days=2)), "to": str(today)}).json()
    assert [item["message_id"] for item in recent["items"]] == [reviews["down"].id, reviews["up"].id]
    first = owner.client.get(url, {"limit": 2}).json()
    second = owner.client.get(url, {"limit": 2, "next": first["next"]}).json()
    assert [i["message_id"] for i in first["items"] + second["items"]] == [item["message_id"] for item in items]
    assert second["next"] is None


def test_feedback_comes_whole_as_csv_safe_for_spreadsheets(owner, reviews):
    response = owner.client.get(f"{owner.base}/feedback", {"output_format": "csv", "thumbs_up": "false"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="feedback.csv"'
    body = async_to_sync(read)(response).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["message_id"] for row in rows] == [reviews["down"].id, reviews["old-down"].id]
    assert rows[0]["answer"] == "'=SUM(A1:A9)"  # (a formula would run in a spreadsheet)
    assert (rows[0]["thumbs_up"], rows[0]["question"], rows[0]["comment"]) == ("false", "Total?", "Too short")


def test_another_tenants_feedback_never_shows(outsider, owner, reviews):
    assert [i["message_id"] for i in outsider.client.get(f"{outsider.base}/feedback").json()["items"]] == [
        reviews["theirs"].id
    ]
    assert outsider.client.get(f"{owner.base}/feedback").status_code == 404


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from": "last week"}, "from"),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "from"),
        ({"thumbs_up": "yes"}, "thumbs_up"),
        ({"to": "9999-12-31"}, "to"),  # (the day after it is no date)
        ({"from": "2025-W09-1"}, "from"),
        ({"output_format": "xlsx"}, "output_format"),
        ({"limit": "0"}, "limit"),
    ],
)
def test_a_bad_feedback_query_is_400_naming_it(owner, params, named):
    response = owner.client.get(f"{owner.base}/feedback", params)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(f"{named}:")


@pytest.mark.django_db(transaction=True)
def test_the_csv_streams_from_a_real_server_within_the_tenants_scope(owner, outsider, django_db_blocker):
    """Streamed after the view returned, the rows are read under the tenant's row-level security scope: the
    tenant's rows, all of them, and none of another tenant's."""
    import httpx

    from tests.servers import served

    mine = [rated(owner, f"Q{i}?", f"A{i}.", thumbs_up=False, category="other") for i in range(3)]
    rated(outsider, "Theirs?", "Theirs.", thumbs_up=False, category="other")
    with django_db_blocker.unblock(), served(REDIS_URL="") as base:
        response = httpx.get(
            f"{base}/tenants/{owner.tenant.id}/api/v2/feedback",
            params={"output_format": "csv"},
            headers={"Authorization": f"Bearer {owner.secret}"},
            timeout=30,
        )
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(row["message_id"] for row in rows) == sorted(reply.id for reply in mine)
