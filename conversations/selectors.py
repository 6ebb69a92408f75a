from django.db.models import QuerySet

from agents.models import Agent
from conversations.models import Conversation
from core.errors import NotFound
from tenants.models import Tenant


def conversation_list(*, tenant: Tenant, agent: Agent | None = None) -> QuerySet[Conversation]:
    queryset = Conversation.objects.for_tenant(tenant)
    return queryset.filter(agent=agent) if agent is not None else queryset


def conversation_get(*, tenant: Tenant, agent_id: str, conversation_id: str) -> Conversation:
    """The tenant's conversation under that agent; a foreign or mismatched id is simply not found."""
    conversation = (
        Conversation.objects.for_tenant(tenant)
        .select_related("agent")
        .filter(id=conversation_id, agent_id=agent_id)
        .first()
    )
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation
