from django.urls import path

from conversations.apis import ConversationViewSet, FeedbackViewSet, TenantConversationViewSet, TitleView
from conversations.review_apis import FeedbackReviewView

AGENT = "agents/<str:agent_id>"
CONVERSATION = f"{AGENT}/conversations/<str:conversation_id>"

# The routes that delete (a conversation, several, all) and the messages routes are in turns.urls.
urlpatterns = [
    path("feedback", FeedbackReviewView.as_view(), name="feedback-review"),
    path("conversations/search", TenantConversationViewSet.as_view({"get": "search"}), name="conversation-search"),
    path(
        f"{AGENT}/conversations",
        ConversationViewSet.as_view({"get": "list", "post": "create"}),
        name="conversation-list",
    ),
    path(f"{CONVERSATION}/title", TitleView.as_view(), name="conversation-title"),
    path(
        f"{CONVERSATION}/messages/<str:message_id>/feedback",
        FeedbackViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}),
        name="message-feedback",
    ),
]
