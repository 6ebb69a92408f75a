from django.urls import path

from agents.apis import AgentViewSet

urlpatterns = [
    path("agents", AgentViewSet.as_view({"get": "list", "post": "create"}), name="agent-list"),
    path(
        "agents/<str:agent_id>",
        AgentViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="agent-detail",
    ),
]
