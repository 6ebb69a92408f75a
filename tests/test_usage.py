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
