from typing import Any

from agents.models import Agent
from tenants.models import Tenant

EDITABLE_FIELDS = ("name", "description", "system_prompt", "engine", "model", "options")


def agent_create(*, tenant: Tenant, data: dict[str, Any]) -> Agent:
    return Agent.objects.create(tenant=tenant, **{k: v for k, v in data.items() if k in EDITABLE_FIELDS})


def agent_update(*, agent: Agent, data: dict[str, Any]) -> Agent:
    changed = [field for field in EDITABLE_FIELDS if field in data]
    for field in changed:
        setattr(agent, field, data[field])
    agent.save(update_fields=[*changed, "updated_at"])
    return agent
