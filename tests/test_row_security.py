"""The second wall between tenants: a query that forgot its tenant filter, run as a tenant's request runs
(the application role, scoped to its tenant), sees and writes nothing of another tenant's."""

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.test import AsyncClient

from conversations.models import Conversation, Message, Role
from core.models import TenantQuerySet
from core.tenancy import current_scope, owner_scope, tenant_scope, tenant_tables
from files.models import File
from tenants.authentication import ApiKeyAuthentication
from tests.conftest import async_client
from turns import runtime

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tenants_rows(owner, outsider):
    """Rows of both tenants in every kind of table a request reads."""
    for ctx in (owner, outsider):
        conversation = ctx.conversation()
        Message.objects.create(tenant=ctx.tenant, conversation=conversation, role=Role.USER, content="hi")
        File.objects.create(
            tenant=ctx.tenant,
            conversation=conversation,
            name="a.txt",
            size=1,
            content_type="text/plain",
            storage_key=f"rls/{ctx.tenant.id}",
        )
    return owner, outsider


def _foreign_rows(tenant_id: str) -> dict[str, int]:
    counts = {}
    with connection.cursor() as cursor:
        for table, column, _ in tenant_tables():
            cursor.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" <> %s', [tenant_id])
            counts[table] = cursor.fetchone()[0]
    return counts


def test_an_unfiltered_query_in_a_tenants_scope_sees_no_foreign_row(two_tenants_rows):
    owner, outsider = two_tenants_rows
    with owner_scope():  # as the owner (maintenance, the admin): every tenant's rows
        assert _foreign_rows(owner.tenant.id)["conversations_conversation"] == 1
        assert Conversation.objects.count() == 2
    with tenant_scope(owner.tenant.id):
        assert set(_foreign_rows(owner.tenant.id).values()) == {0}
        assert list(Conversation.objects.values_list("tenant_id", flat=True)) == [owner.tenant.id]
        assert list(Message.objects.values_list("tenant_id", flat=True)) == [owner.tenant.id]
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_setting('parley.tenant_id')")
            assert cursor.fetchone() == (settings.DATABASE_APP_ROLE, owner.tenant.id)


def test_an_api_request_before_authentication_sees_nothing(two_tenants_rows):
    with tenant_scope(""):
        assert set(_foreign_rows("").values()) == {0}
        assert not Conversation.objects.exists()


def test_foreign_rows_cannot_be_written(two_tenants_rows):
    owner, outsider = two_tenants_rows
    with tenant_scope(owner.tenant.id):
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            Conversation.objects.create(tenant=outsider.tenant, agent=outsider.agent, name="planted")
        # Unfiltered updates and deletes reach only the scope's rows.
        assert Conversation.objects.update(name="renamed") == 1
        assert Message.objects.all().delete()[0] == 1
    with owner_scope():
        assert set(Conversation.objects.values_list("tenant_id", "name")) == {
            (owner.tenant.id, "renamed"),
            (outsider.tenant.id, "Chat"),
        }
        assert Message.objects.filter(tenant=outsider.tenant).count() == 1


def test_the_application_role_cannot_turn_the_policies_off(two_tenants_rows):
    owner, _ = two_tenants_rows
    with tenant_scope(owner.tenant.id), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (False, False)
        cursor.execute("SET LOCAL row_security = off")
        with pytest.raises(DatabaseError, match="row-level security"), transaction.atomic():
            cursor.execute("SELECT count(*) FROM conversations_conversation")


def test_every_table_with_a_tenant_column_has_the_policy():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
            " WHERE c.relkind = 'r' AND a.attname = 'tenant_id' AND c.relnamespace = current_schema()::regnamespace"
            " AND NOT (c.relrowsecurity AND EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = c.oid))"
        )
        assert cursor.fetchall() == []
    assert {table for table, _, _ in tenant_tables()} >= {"tenants_tenant", "conversations_message", "files_passage"}


def test_a_transaction_rolled_back_leaves_no_scope_behind(two_tenants_rows):
    owner, outsider = two_tenants_rows
    with pytest.raises(RuntimeError), transaction.atomic():
        with tenant_scope(outsider.tenant.id):
            assert Conversation.objects.get().tenant_id == outsider.tenant.id
        raise RuntimeError("rolled back")
    with tenant_scope(owner.tenant.id):
        assert Conversation.objects.get().tenant_id == owner.tenant.id
    assert Conversation.objects.count() == 2  # unscoped again: the owner


@pytest.fixture
def filters_forgotten(monkeypatch):
    """Every `for_tenant()` filter gone, as if each selector had forgotten it."""
    monkeypatch.setattr(TenantQuerySet, "for_tenant", lambda self, tenant: self)


def test_requests_whose_code_forgot_the_tenant_filter_see_only_their_tenant(two_tenants_rows, filters_forgotten):
    owner, outsider = two_tenants_rows
    response = outsider.client.get(f"{outsider.base}/agents")
    assert response.status_code == 200
    assert [agent["id"] for agent in response.json()["items"]] == [outsider.agent.id]
    assert outsider.client.get(f"{outsider.base}/agents/{owner.agent.id}").status_code == 404
    conversation = Conversation.objects.get(tenant=owner.tenant)
    url = f"{outsider.base}/agents/{owner.agent.id}/conversations/{conversation.id}"
    assert outsider.client.get(url).status_code == 404
    assert outsider.client.get(f"{url}/messages").status_code == 404
    assert outsider.client.get(f"{url}/files").status_code == 404
    # The test's own queries, after the requests, are the owner's again.
    assert Conversation.objects.count() == 2


@pytest.mark.django_db(transaction=True)  # the async view's threads use their own connections
async def test_async_requests_are_scoped_too(two_tenants_rows, filters_forgotten):
    owner, outsider = two_tenants_rows
    conversation = await Conversation.objects.aget(tenant=owner.tenant)
    url = f"{outsider.base}/agents/{owner.agent.id}/conversations/{conversation.id}/messages"
    response = await async_client(outsider).post(url, {"content": "hello"}, content_type="application/json")
    assert response.status_code == 404, response.content
    assert await Message.objects.filter(conversation=conversation).acount() == 1
    own = await Conversation.objects.aget(tenant=outsider.tenant)
    response = await async_client(outsider).get(
        f"{outsider.base}/agents/{outsider.agent.id}/conversations/{own.id}/messages?branch=all"
    )
    assert response.status_code == 200, response.content
    assert [message["content"] for message in response.json()["items"]] == ["hi"]


@pytest.mark.django_db(transaction=True)  # autocommit: the scope is set for the session, then changed
def test_one_connection_changes_scope_between_statements_and_transactions(two_tenants_rows):
    owner, outsider = two_tenants_rows
    for tenant in (owner.tenant, outsider.tenant, owner.tenant):
        with tenant_scope(tenant.id):
            assert list(Conversation.objects.values_list("tenant_id", flat=True)) == [tenant.id]
        assert Conversation.objects.count() == 2
    with tenant_scope(outsider.tenant.id):
        with pytest.raises(RuntimeError), transaction.atomic():
            with tenant_scope(owner.tenant.id):
                Conversation.objects.update(name="inside")
            assert Conversation.objects.get().tenant_id == outsider.tenant.id
            raise RuntimeError("rolled back")
        assert Conversation.objects.get().tenant_id == outsider.tenant.id
    assert Conversation.objects.count() == 2
    assert not Conversation.objects.filter(name="inside").exists()


@pytest.fixture
def finish_scopes(monkeypatch):
    """The role and tenant each generation's final write runs as (a query of its own, in its thread)."""
    seen = []
    original = runtime._finish_and_count

    def recording(*args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, current_setting('parley.tenant_id', true)")
            seen.append(cursor.fetchone())
        return original(*args, **kwargs)

    monkeypatch.setattr(runtime, "_finish_and_count", recording)
    return seen


@pytest.mark.django_db(transaction=True)  # the generation's threads use their own connections
def test_a_reply_is_generated_in_its_tenants_scope_with_or_without_an_idempotency_key(owner, finish_scopes):
    conversation = owner.conversation()
    url = f"{owner.conversation_url(conversation)}/messages"
    assert owner.client.post(url, {"content": "hello"}, format="json").status_code == 200
    response = owner.client.post(url, {"content": "again"}, format="json", HTTP_IDEMPOTENCY_KEY="once")
    assert response.status_code == 200, response.content
    assert finish_scopes == [(settings.DATABASE_APP_ROLE, owner.tenant.id)] * 2


@pytest.mark.django_db(transaction=True)
async def test_an_api_request_runs_in_no_tenants_scope_until_authenticated(owner, monkeypatch):
    scopes = []
    original = ApiKeyAuthentication.authenticate

    def recording(self, request):
        scopes.append(current_scope())
        return original(self, request)

    monkeypatch.setattr(ApiKeyAuthentication, "authenticate", recording)
    client = AsyncClient(headers={"Authorization": "Bearer prl_00000000_unknown"})
    response = await client.get(f"{owner.base}/agents")  # an async server's request: its own context
    assert response.status_code == 401
    response = await async_client(owner).get(f"{owner.base}/agents/{owner.agent.id}/conversations")
    assert response.status_code == 200
    assert scopes == ["", ""]
