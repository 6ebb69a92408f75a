"""WebSocket routes (config.asgi): the tenant's socket, beside its REST routes."""

from django.urls import path

from turns.consumers import ConversationSocket

websocket_urlpatterns = [path("tenants/<str:tenant_id>/api/v2/ws", ConversationSocket.as_asgi())]
