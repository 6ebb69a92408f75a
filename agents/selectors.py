from agents.models import Agent
from core.errors import NotFound
from tenants.models import Tenant


def agent_list(*, tenant: Tenant):
    return Agent.objects.for_tenant(tenant)


def agent_get(*, tenant: Tenant, agent_id: str) -> Agent:
    agent = Agent.objects.for_tenant(tenant).filter(id=agent_id).first()
    if agent is None:
        raise NotFound("Agent not found.")
    return agent
