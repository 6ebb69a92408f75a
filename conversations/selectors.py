import json
import math
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from agents.models import Agent
from conversations.models import Conversation, Feedback, Message, Role
from core.errors import NotFound
from tenants.models import Tenant


@dataclass(frozen=True)
class ConversationFilters:
    """What lists and search narrow to: an end user's conversations, and metadata values (all of them)."""

    user_id: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    archived: bool | None = False  # the archived conversations instead of the others (None: both, for search)

    def q(self) -> Q:
        """As a filter on conversations: `user_id` by the index (tenant, user_id, activity), each metadata value
        by containment (@>, the GIN index), as the string given or the JSON scalar it spells (`3`, `true`)."""
        condition = Q(archived=self.archived) if self.archived is not None else Q()
        if self.user_id is not None:
            condition &= Q(user_id=self.user_id)
        for key, value in self.metadata:
            matches = Q(metadata__contains={key: value})
            if (scalar := _json_scalar(value)) is not None:
                matches |= Q(metadata__contains={key: scalar})
            condition &= matches
        return condition

    def sql(self, alias: str, params: dict) -> str:
        """The same, as SQL conditions on `alias` (for the search's raw query), its values put in `params`."""
        conditions = []
        if self.archived is not None:
            conditions.append(f"{alias}.archived = %(filter_archived)s")
            params["filter_archived"] = self.archived
        if self.user_id is not None:
            conditions.append(f"{alias}.user_id = %(filter_user_id)s")
            params["filter_user_id"] = self.user_id
        for number, (key, value) in enumerate(self.metadata):
            params[f"filter_meta_{number}"] = json.dumps({key: value})
            matches = [f"{alias}.metadata @> %(filter_meta_{number})s::jsonb"]
            if (scalar := _json_scalar(value)) is not None:
                params[f"filter_meta_{number}_scalar"] = json.dumps({key: scalar})
                matches.append(f"{alias}.metadata @> %(filter_meta_{number}_scalar)s::jsonb")
            conditions.append(f"({' OR '.join(matches)})")
        return "".join(f" AND {condition}" for condition in conditions)


def _json_scalar(value: str) -> int | float | bool | None:
    """The JSON number or boolean `value` spells, if any (not NaN or an infinity: JSON has none)."""
    if value in ("true", "false"):
        return value == "true"
    try:
        number = json.loads(value, parse_constant=lambda constant: None)
    except ValueError:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return number if isinstance(number, (int, float)) and not isinstance(number, bool) else None


def conversation_list(
    *, tenant: Tenant, agent: Agent | None = None, filters: ConversationFilters | None = None
) -> QuerySet[Conversation]:
    queryset = Conversation.objects.for_tenant(tenant)
    if filters is not None:
        queryset = queryset.filter(filters.q())
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


def message_subtree_ids(message: Message) -> RawSQL:
    """The message and every message under it, at any depth (one recursive query)."""
    table = Message._meta.db_table
    return RawSQL(
        f"""WITH RECURSIVE subtree(id) AS (
                SELECT id FROM {table} WHERE id = %s AND conversation_id = %s
                UNION ALL
                SELECT m.id FROM {table} m JOIN subtree s ON m.parent_id = s.id
            ) SELECT id FROM subtree""",
        [message.id, message.conversation_id],
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


def feedback_list(
    *, tenant: Tenant, since: datetime | None = None, until: datetime | None = None, thumbs_up: bool | None = None
) -> QuerySet[Feedback]:
    """The tenant's feedback given (or last changed) from `since` up to `until` (excluded), with the message
    rated and the question it answered."""
    queryset = (
        Feedback.objects.for_tenant(tenant)
        .select_related("message__parent", "message__conversation")
        .only(  # not the messages' stream logs, which can be large
            "id",
            "tenant_id",
            "thumbs_up",
            "category",
            "comment",
            "created_at",
            "updated_at",
            "message_id",
            "message__id",
            "message__content",
            "message__model",
            "message__conversation_id",
            "message__parent_id",
            "message__parent__id",
            "message__parent__content",
            "message__conversation__id",
            "message__conversation__agent_id",
        )  # fmt: skip
    )
    if since is not None:
        queryset = queryset.filter(updated_at__gte=since)
    if until is not None:
        queryset = queryset.filter(updated_at__lt=until)
    return queryset.filter(thumbs_up=thumbs_up) if thumbs_up is not None else queryset


def message_first_question(*, conversation: Conversation) -> Message | None:
    """The conversation's first user message (titles are proposed from it)."""
    return (
        Message.objects.filter(tenant_id=conversation.tenant_id, conversation=conversation, role=Role.USER)
        .order_by("created_at", "id")
        .first()
    )
