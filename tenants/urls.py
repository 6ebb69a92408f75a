from django.urls import path

from tenants.apis import UsageView
from tenants.webhook_apis import WebhookDeliveriesView, WebhookReplayView, WebhookViewSet

urlpatterns = [
    path("usage", UsageView.as_view(), name="usage"),
    path("webhooks", WebhookViewSet.as_view({"get": "list", "post": "create"}), name="webhook-list"),
    path(
        "webhooks/<str:webhook_id>",
        WebhookViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="webhook-detail",
    ),
    path("webhooks/<str:webhook_id>/deliveries", WebhookDeliveriesView.as_view(), name="webhook-deliveries"),
    path(
        "webhooks/<str:webhook_id>/deliveries/<str:delivery_id>/replay",
        WebhookReplayView.as_view(),
        name="webhook-delivery-replay",
    ),
]
