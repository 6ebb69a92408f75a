"""Daily usage counters: what billing and quotas read."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, transaction

from tenants.models import DailyUsage
from tenants.services import usage_record


@pytest.mark.django_db(transaction=True)
def test_concurrent_replies_add_up(owner):
    def record(_):
        try:
            usage_record(tenant_id=owner.tenant.id, requests=1, input_tokens=3, output_tokens=5)
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(record, range(40)))
    usage = DailyUsage.objects.get(tenant=owner.tenant)
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (40, 120, 200)


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_its_commit_stays_durable(owner):
    with transaction.atomic(), connection.cursor() as cursor:
        usage_record(tenant_id=owner.tenant.id, output_tokens=7)
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    assert DailyUsage.objects.get(tenant=owner.tenant).output_tokens == 7


@pytest.mark.django_db(transaction=True)
def test_the_tenant_reads_its_usage_by_day_agent_and_model(owner, outsider):
    """What replies recorded, summed as asked; another tenant's usage never shows."""
    import datetime

    from agents.models import Agent

    other = Agent.objects.create(tenant=owner.tenant, name="gpt", engine="openai", model="gpt-4o-mini")
    conversation = owner.conversation()
    response = owner.client.post(f"{owner.conversation_url(conversation)}/messages", {"content": "hi"}, format="json")
    assert response.status_code == 200
    today = datetime.datetime.now(datetime.UTC).date()
    old = today - datetime.timedelta(days=40)
    DailyUsage.objects.create(tenant=owner.tenant, day=today, agent_id=other.id, engine="openai",
                              model="gpt-4o-mini", requests=3, input_tokens=300, output_tokens=30)  # fmt: skip
    DailyUsage.objects.create(tenant=owner.tenant, day=old, requests=5, input_tokens=50, output_tokens=5)
    usage_record(tenant_id=outsider.tenant.id, agent_id=outsider.agent.id, engine="builtin", output_tokens=999)
    url = f"{owner.base}/usage"

    by_day = owner.client.get(url).json()
    assert (by_day["from"], by_day["to"], by_day["group_by"]) == (
        str(today - datetime.timedelta(days=29)),
        str(today),
        "day",
    )
    builtin = DailyUsage.objects.get(tenant=owner.tenant, agent_id=owner.agent.id, engine="builtin", model="")
    assert builtin.requests == 1 and builtin.day == today  # (the reply's, recorded under its agent and engine)
    assert by_day["items"] == [
        {"day": str(today), "turns": 4, "input_tokens": 300 + builtin.input_tokens,
         "output_tokens": 30 + builtin.output_tokens}
    ]  # fmt: skip
    by_agent = owner.client.get(url, {"group_by": "agent", "from": str(old), "to": str(today)}).json()["items"]
    assert {row["agent_id"]: row["turns"] for row in by_agent} == {"": 5, owner.agent.id: 1, other.id: 3}
    by_model = owner.client.get(url, {"group_by": "model"}).json()["items"]
    assert [(row["engine"], row["model"], row["turns"]) for row in by_model] == [
        ("builtin", "", 1),
        ("openai", "gpt-4o-mini", 3),
    ]
    assert outsider.client.get(url).status_code == 404  # (the owner's tenant, with the outsider's key)
    assert outsider.client.get(f"{outsider.base}/usage", {"group_by": "agent"}).json()["items"] == [
        {"agent_id": outsider.agent.id, "turns": 1, "input_tokens": 0, "output_tokens": 999}
    ]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2025-02-30"}, "to"),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "from"),
        ({"from": "2024-01-01", "to": "2025-03-01"}, "from"),
        ({"group_by": "week"}, "group_by"),
        ({"to": "0001-01-02"}, "to"),  # (29 days before it is no date)
        ({"from": "20250301"}, "from"),  # (ISO allows it; the API says YYYY-MM-DD)
    ],
)
@pytest.mark.django_db
def test_a_bad_usage_query_is_400_naming_it(owner, params, named):
    response = owner.client.get(f"{owner.base}/usage", params)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(f"{named}:")
