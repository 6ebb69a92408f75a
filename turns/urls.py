from django.urls import path

from conversations.urls import AGENT, CONVERSATION
from turns.apis import MessageCancelView, MessageStreamView, MessagesView, StreamView, WsTicketView
from turns.deletion_apis import (
    DeletableAgentViewSet,
    DeletableConversationViewSet,
    DeletableTenantConversationViewSet,
)
from turns.history_apis import MessagesAppendView, MessageView
from turns.portability_apis import ConversationExportView, ConversationForkView, ConversationImportView
from turns.queue_apis import QueuedTurnView, QueueView

urlpatterns = [
    # Before the conversation's routes, which would take "import" for a conversation id.
    path(f"{AGENT}/conversations/import", ConversationImportView.as_view(), name="conversation-import"),
    path(
        AGENT,
        DeletableAgentViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="agent-detail",
    ),
    path(
        "conversations",
        DeletableTenantConversationViewSet.as_view({"get": "list", "delete": "destroy_all"}),
        name="tenant-conversation-list",
    ),
    path(
        "conversations/bulk-delete",
        DeletableTenantConversationViewSet.as_view({"post": "bulk_delete"}),
        name="conversation-bulk-delete",
    ),
    path(
        CONVERSATION,
        DeletableConversationViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="conversation-detail",
    ),
    path(f"{CONVERSATION}/fork", ConversationForkView.as_view(), name="conversation-fork"),
    path(f"{CONVERSATION}/export", ConversationExportView.as_view(), name="conversation-export"),
    path(f"{CONVERSATION}/messages", MessagesView.as_view(), name="message-list"),
    path(f"{CONVERSATION}/messages/append", MessagesAppendView.as_view(), name="message-append"),
    path(f"{CONVERSATION}/messages/<str:message_id>", MessageView.as_view(), name="message-detail"),
    path(f"{CONVERSATION}/stream", StreamView.as_view(), name="conversation-stream"),
    path(f"{CONVERSATION}/queue", QueueView.as_view(), name="conversation-queue"),
    path(f"{CONVERSATION}/queue/<str:queued_turn_id>", QueuedTurnView.as_view(), name="queued-turn"),
    path(f"{CONVERSATION}/messages/<str:message_id>/stream", MessageStreamView.as_view(), name="message-stream"),
    path(f"{CONVERSATION}/messages/<str:message_id>/cancel", MessageCancelView.as_view(), name="message-cancel"),
    path("ws-tickets", WsTicketView.as_view(), name="ws-ticket"),
]
