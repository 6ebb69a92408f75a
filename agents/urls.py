from django.urls import path

from agents.apis import AgentViewSet

# The agent detail route (with its DELETE) is in turns.urls: deleting an agent stops its replies.
urlpatterns = [
    path("agents", AgentViewSet.as_view({"get": "list", "post": "create"}), name="agent-list"),
]
