"""The project's routes plus a bare async view, mounted only under bench.settings, as the yardstick."""

from django.http import HttpRequest, JsonResponse
from django.urls import path

from config.urls import handler400, handler403, handler404, handler500
from config.urls import urlpatterns as project_urlpatterns
from conversations.models import Conversation

FIELDS = ("id", "name", "agent_id", "title_source", "created_at", "updated_at", "message_count", "metadata")
LIMIT = 50


async def bare_conversation_list(request: HttpRequest, tenant_id: str, agent_id: str) -> JsonResponse:
    """The list endpoint's query (same filter, ordering, limit + 1) with no auth, DRF or serializer."""
    queryset = (
        Conversation.objects.filter(tenant_id=tenant_id, agent_id=agent_id)
        .order_by("-updated_at", "-id")
        .values(*FIELDS)[: LIMIT + 1]
    )
    rows = [row async for row in queryset]
    return JsonResponse({"items": rows[:LIMIT]})


urlpatterns = [
    path("bench/tenants/<str:tenant_id>/agents/<str:agent_id>/conversations", bare_conversation_list),
    *project_urlpatterns,
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
