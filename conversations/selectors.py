from asgiref.sync import sync_to_async
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL

from agents.models import Agent
from conversations.models import Conversation, Message, Role
from core.errors import NotFound
from tenants.models import Tenant


def conversation_list(*, tenant: Tenant, agent: Agent | None = None) -> QuerySet[Conversation]:
    queryset = Conversation.objects.for_tenant(tenant)
    return queryset.filter(agent=agent) if agent is not None else queryset


def conversation_get(*, tenant: Tenant, agent_id: str, conversation_id: str) -> Conversation:
    """The tenant's conversation under that agent; a foreign or mismatched id is simply not found."""
    try:
        conversations = Conversation.objects.for_tenant(tenant).select_related("agent")
        return conversations.get(id=conversation_id, agent_id=agent_id)
    except Conversation.DoesNotExist:
        raise NotFound("Conversation not found.") from None


async def conversation_aget(*, tenant: Tenant, agent_id: str, conversation_id: str) -> Conversation:
    """conversation_get for async views."""
    return await sync_to_async(conversation_get)(tenant=tenant, agent_id=agent_id, conversation_id=conversation_id)


def message_branch(*, conversation: Conversation, tip_id: str) -> list[Message]:
    """The path from the root to `tip_id`, oldest first (one recursive query)."""
    return list(
        Message.objects.filter(tenant_id=conversation.tenant_id, id__in=_branch_ids(conversation, tip_id)).order_by(
            "created_at", "id"
        )
    )


def _branch_ids(conversation: Conversation, tip_id: str | None) -> RawSQL:
    table = Message._meta.db_table
    return RawSQL(
        f"""WITH RECURSIVE branch(id, parent_id) AS (
                SELECT id, parent_id FROM {table} WHERE id = %s AND conversation_id = %s
                UNION ALL
                SELECT m.id, m.parent_id FROM {table} m JOIN branch b ON m.id = b.parent_id
            ) SELECT id FROM branch""",
        [tip_id or "", conversation.id],
    )


def message_list(*, conversation: Conversation, branch: str = "active") -> QuerySet[Message]:
    """The active branch (root to the current message), or every message with branch="all"."""
    queryset = Message.objects.filter(tenant_id=conversation.tenant_id, conversation=conversation)
    if branch == "all":
        return queryset
    return queryset.filter(id__in=_branch_ids(conversation, conversation.current_message_id))


def message_get(*, conversation: Conversation, message_id: str) -> Message:
    message = (
        Message.objects.for_display()
        .filter(tenant_id=conversation.tenant_id, conversation=conversation, id=message_id)
        .first()
    )
    if message is None:
        raise NotFound("Message not found.")
    return message


def conversation_state_messages(*, conversation: Conversation, limit: int) -> tuple[list[Message], bool]:
    """The newest `limit` messages with their children ids attached (`child_ids`), and whether more exist."""
    newest = list(
        Message.objects.filter(tenant_id=conversation.tenant_id, conversation=conversation)
        .for_display()
        .order_by("-created_at", "-id")[: limit + 1]
    )
    truncated = len(newest) > limit
    messages = list(reversed(newest[:limit]))
    children: dict[str, list[str]] = {m.id: [] for m in messages}
    for message in messages:  # children are always newer than their parent, so all are in the window
        if message.parent_id in children:
            children[message.parent_id].append(message.id)
    for message in messages:
        message.child_ids = children[message.id]
    return messages, truncated


def message_first_question(*, conversation: Conversation) -> Message | None:
    """The conversation's first user message (titles are proposed from it)."""
    return (
        Message.objects.filter(tenant_id=conversation.tenant_id, conversation=conversation, role=Role.USER)
        .order_by("created_at", "id")
        .first()
    )
