"""Fixtures: two tenants (an owner and an outsider), each with an API key, an agent and a client."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from agents.models import Agent
from conversations.models import Conversation
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create, tenant_create


@dataclass
class TenantContext:
    tenant: Tenant
    key: ApiKey
    secret: str
    agent: Agent
    client: APIClient

    @property
    def base(self) -> str:
        return f"/tenants/{self.tenant.id}/api/v2"

    @property
    def agent_url(self) -> str:
        return f"{self.base}/agents/{self.agent.id}"

    def conversation(self, name: str = "Chat", agent: Agent | None = None) -> Conversation:
        agent = agent or self.agent
        return Conversation.objects.create(tenant=self.tenant, agent=agent, name=name)

    def conversation_url(self, conversation: Conversation) -> str:
        return f"{self.base}/agents/{conversation.agent_id}/conversations/{conversation.id}"


def make_tenant(tenant_id: str) -> TenantContext:
    tenant = tenant_create(tenant_id=tenant_id, name=tenant_id.title())
    key, secret = api_key_create(tenant=tenant, name="tests")
    agent = Agent.objects.create(tenant=tenant, name=f"{tenant_id} agent", system_prompt="You are helpful.")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return TenantContext(tenant=tenant, key=key, secret=secret, agent=agent, client=client)


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()  # throttle counters must not leak between tests
    yield
    cache.clear()


@pytest.fixture
def owner(db) -> TenantContext:
    return make_tenant("acme")


@pytest.fixture
def outsider(db) -> TenantContext:
    return make_tenant("globex")


@pytest.fixture
def anon() -> APIClient:
    return APIClient()
