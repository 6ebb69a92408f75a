from django.urls import path

from agents.apis import AgentViewSet, HttpToolViewSet, McpServerToolsView, McpServerViewSet

# The agent detail route (with its DELETE) is in turns.urls: deleting an agent stops its replies.
urlpatterns = [
    path("agents", AgentViewSet.as_view({"get": "list", "post": "create"}), name="agent-list"),
    path("tools", HttpToolViewSet.as_view({"get": "list", "post": "create"}), name="tool-list"),
    path(
        "tools/<str:tool_id>",
        HttpToolViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="tool-detail",
    ),
    path("mcp-servers", McpServerViewSet.as_view({"get": "list", "post": "create"}), name="mcp-server-list"),
    path(
        "mcp-servers/<str:server_id>",
        McpServerViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="mcp-server-detail",
    ),
    path("mcp-servers/<str:server_id>/tools", McpServerToolsView.as_view(), name="mcp-server-tools"),
]
