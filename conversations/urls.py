from django.urls import path

from conversations.apis import ConversationViewSet
from conversations.message_apis import MessageCancelView, MessageStreamView, MessagesView, StreamView

AGENT = "agents/<str:agent_id>"
CONVERSATION = f"{AGENT}/conversations/<str:conversation_id>"

urlpatterns = [
    path(
        f"{AGENT}/conversations",
        ConversationViewSet.as_view({"get": "list", "post": "create"}),
        name="conversation-list",
    ),
    path(
        CONVERSATION,
        ConversationViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="conversation-detail",
    ),
    path(f"{CONVERSATION}/messages", MessagesView.as_view(), name="message-list"),
    path(f"{CONVERSATION}/stream", StreamView.as_view(), name="conversation-stream"),
    path(f"{CONVERSATION}/messages/<str:message_id>/stream", MessageStreamView.as_view(), name="message-stream"),
    path(f"{CONVERSATION}/messages/<str:message_id>/cancel", MessageCancelView.as_view(), name="message-cancel"),
]
