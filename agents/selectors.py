from agents.models import Agent, HttpTool
from core.errors import NotFound
from tenants.models import Tenant


def agent_list(*, tenant: Tenant):
    return Agent.objects.for_tenant(tenant)


def agent_get(*, tenant: Tenant, agent_id: str) -> Agent:
    agent = Agent.objects.for_tenant(tenant).filter(id=agent_id).first()
    if agent is None:
        raise NotFound("Agent not found.")
    return agent


def http_tool_list(*, tenant: Tenant):
    return HttpTool.objects.for_tenant(tenant)


def http_tool_get(*, tenant: Tenant, tool_id: str) -> HttpTool:
    tool = HttpTool.objects.for_tenant(tenant).filter(id=tool_id).first()
    if tool is None:
        raise NotFound("Tool not found.")
    return tool


def http_tool_names(*, tenant: Tenant, names: list[str]) -> set[str]:
    """Those of `names` that are the tenant's tools."""
    return set(HttpTool.objects.for_tenant(tenant).filter(name__in=names).values_list("name", flat=True))
