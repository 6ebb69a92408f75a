from django.urls import path

from conversations.apis import ConversationViewSet, FeedbackViewSet, TenantConversationViewSet
from conversations.message_apis import MessageCancelView, MessageStreamView, MessagesView, StreamView, TitleView

AGENT = "agents/<str:agent_id>"
CONVERSATION = f"{AGENT}/conversations/<str:conversation_id>"

urlpatterns = [
    path(
        "conversations",
        TenantConversationViewSet.as_view({"get": "list", "delete": "destroy_all"}),
        name="tenant-conversation-list",
    ),
    path("conversations/search", TenantConversationViewSet.as_view({"get": "search"}), name="conversation-search"),
    path(
        "conversations/bulk-delete",
        TenantConversationViewSet.as_view({"post": "bulk_delete"}),
        name="conversation-bulk-delete",
    ),
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
    path(f"{CONVERSATION}/title", TitleView.as_view(), name="conversation-title"),
    path(
        f"{CONVERSATION}/messages/<str:message_id>/feedback",
        FeedbackViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}),
        name="message-feedback",
    ),
    path(f"{CONVERSATION}/messages/<str:message_id>/stream", MessageStreamView.as_view(), name="message-stream"),
    path(f"{CONVERSATION}/messages/<str:message_id>/cancel", MessageCancelView.as_view(), name="message-cancel"),
]
