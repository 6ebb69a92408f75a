"""The tenant's webhook endpoints (`/webhooks`), their deliveries, and a delivery sent again."""

from django.db import transaction
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import Invalid, NotFound
from core.pagination import keyset_pagination
from tenants.models import WebhookDelivery, WebhookEndpoint
from tenants.serializers import (
    WebhookDeliverySerializer,
    WebhookEndpointCreatedSerializer,
    WebhookEndpointInputSerializer,
    WebhookEndpointSerializer,
)
from tenants.webhooks import webhook_delivery_replay, webhook_endpoint_create, webhook_endpoint_update

WEBHOOK_EXAMPLE = {
    "id": "whk_01jngdq6mx3v9k2t8b4r7c1zsa",
    "url": "https://hooks.acme.example/parley",
    "description": "CRM sync",
    "events": ["message.completed", "message.failed"],
    "active": True,
    "created_at": "2025-03-04T10:26:00.412301Z",
}
_WEBHOOK_RESPONSE = OpenApiExample("An endpoint", value=WEBHOOK_EXAMPLE, response_only=True)
DELIVERY_EXAMPLE = {
    "id": "whd_01jngdt0c2p8w4x6y9z3a5b7cd",
    "event_id": "evt_01jngdt0c1k7m2n4p6q8r0s2tv",
    "event_type": "message.completed",
    "status": "delivered",
    "attempts": 2,
    "next_attempt_at": "2025-03-04T10:30:13.020000Z",
    "delivered_at": "2025-03-04T10:30:13.311000Z",
    "attempt_log": [
        {"at": "2025-03-04T10:30:08.020000Z", "status_code": 503, "error": "Answered 503.", "duration_ms": 41},
        {"at": "2025-03-04T10:30:13.020000Z", "status_code": 200, "error": "", "duration_ms": 38},
    ],
    "payload": {
        "id": "evt_01jngdt0c1k7m2n4p6q8r0s2tv",
        "type": "message.completed",
        "timestamp": "2025-03-04T10:30:08.001000Z",
        "data": {"message": {"id": "msg_01jngb9320er8x3d7fsjzd70va", "status": "completed"}, "agent_id": "agt_…"},
    },
    "created_at": "2025-03-04T10:30:08.001000Z",
}
_RULES = (
    "`url`: HTTPS (plain HTTP, and private, loopback or link-local addresses, only within the operator's "
    "TOOL_ALLOWED_NETWORKS: a delivery there fails, saying why); `events`: one or more of `message.completed`, "
    "`message.failed`, `message.cancelled`, `conversation.deleted`, `file.extracted`; `description` up to 200 "
    "characters; `active` (default true). Any other field is refused."
)
_ENDPOINT_ID = OpenApiParameter("webhook_id", str, OpenApiParameter.PATH)


def webhook_get(*, tenant, webhook_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.for_tenant(tenant).filter(id=webhook_id).first()
    if endpoint is None:
        raise NotFound("Webhook endpoint not found.")
    return endpoint


@extend_schema_view(
    list=extend_schema(
        summary="List the tenant's webhook endpoints",
        description="Newest first, a page at a time: `limit` (1 to 100, default 20) and the `next` cursor of "
        "the previous page. Secrets are never shown again.\n\nErrors: 400 for a `limit` out of range or a "
        "malformed `next` cursor.",
        responses=WebhookEndpointSerializer(many=True),
        examples=[_WEBHOOK_RESPONSE],
    ),
    create=extend_schema(
        summary="Register a webhook endpoint",
        description="Parley POSTs each event the endpoint subscribed to as JSON (`id`, `type`, `timestamp`, "
        "`data`: the object), signed as Standard Webhooks specifies (`webhook-id`: the event's id, the same on "
        "every attempt, for the receiver to drop a duplicate; `webhook-timestamp`; `webhook-signature: "
        "v1,<base64 HMAC-SHA256>` under the `secret` answered here once). An answer 2xx delivers it; anything "
        "else (or none within WEBHOOK_TIMEOUT_SECONDS) is tried again with exponential backoff for up to "
        f"WEBHOOK_RETRY_HOURS (24), later events of the endpoint waiting behind it. {_RULES}\n\nErrors: 400 for "
        "an invalid field (the message names it).",
        request=WebhookEndpointInputSerializer,
        responses={201: WebhookEndpointCreatedSerializer},
        examples=[
            OpenApiExample(
                "Replies, as they end",
                value={"url": "https://hooks.acme.example/parley", "events": ["message.completed", "message.failed"]},
                request_only=True,
            ),
            OpenApiExample(
                "The endpoint and its secret",
                value={**WEBHOOK_EXAMPLE, "secret": "whsec_MfKQ9r8GKYqkbvAU7Xq3tBJ2Qn8L0yVd"},
                response_only=True,
                status_codes=["201"],
            ),
        ],
    ),
    retrieve=extend_schema(
        summary="Get a webhook endpoint",
        description="Its fields; never its secret.\n\nErrors: 404 for an endpoint that is not the tenant's.",
        parameters=[_ENDPOINT_ID],
        responses=WebhookEndpointSerializer,
        examples=[_WEBHOOK_RESPONSE],
    ),
    partial_update=extend_schema(
        summary="Change a webhook endpoint",
        description=f"Any of its fields; `events` is replaced whole. {_RULES}\n\nErrors: 400 for an invalid "
        "field; 404 for an endpoint that is not the tenant's.",
        parameters=[_ENDPOINT_ID],
        request=WebhookEndpointInputSerializer,
        responses=WebhookEndpointSerializer,
        examples=[OpenApiExample("Pause it", value={"active": False}, request_only=True), _WEBHOOK_RESPONSE],
    ),
    destroy=extend_schema(
        summary="Delete a webhook endpoint with its deliveries",
        description="Answers the endpoint as it was; its pending deliveries are not sent.\n\nErrors: 404 for "
        "an endpoint that is not the tenant's.",
        parameters=[_ENDPOINT_ID],
        responses={200: WebhookEndpointSerializer},
        examples=[_WEBHOOK_RESPONSE],
    ),
)
class WebhookViewSet(viewsets.GenericViewSet):
    serializer_class = WebhookEndpointSerializer
    pagination_class = keyset_pagination("-created_at", "-id")

    def list(self, request, tenant_id):
        page = self.paginate_queryset(WebhookEndpoint.objects.for_tenant(request.tenant))
        return self.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    def create(self, request, tenant_id):
        serializer = WebhookEndpointInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(tenant=request.tenant, **serializer.validated_data)
        body = {**WebhookEndpointSerializer(endpoint).data, "secret": secret}
        return Response(WebhookEndpointCreatedSerializer(body).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, tenant_id, webhook_id):
        return Response(WebhookEndpointSerializer(webhook_get(tenant=request.tenant, webhook_id=webhook_id)).data)

    def partial_update(self, request, tenant_id, webhook_id):
        endpoint = webhook_get(tenant=request.tenant, webhook_id=webhook_id)
        serializer = WebhookEndpointInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        endpoint = webhook_endpoint_update(endpoint=endpoint, data=serializer.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)

    def destroy(self, request, tenant_id, webhook_id):
        endpoint = webhook_get(tenant=request.tenant, webhook_id=webhook_id)
        body = WebhookEndpointSerializer(endpoint).data
        endpoint.delete()
        return Response(body)


class WebhookDeliveryPageSerializer(serializers.Serializer):
    items = WebhookDeliverySerializer(many=True)
    next = serializers.CharField(allow_null=True, help_text="The cursor of the next page; null on the last.")


class WebhookDeliveriesView(APIView):
    pagination_class = keyset_pagination("-created_at", "-id")

    @extend_schema(
        summary="List an endpoint's deliveries, with their attempts",
        description="Newest first, a page at a time (`limit`, `next`): each event sent or to be sent to the "
        "endpoint, its status, its latest attempts (when, the answer's status code, the error, how long) and "
        "the body sent. `status=pending|delivered|failed` narrows the list.\n\nErrors: 400 for an unknown "
        "`status`, a `limit` out of range or a malformed `next` cursor; 404 for an endpoint that is not the "
        "tenant's.",
        parameters=[
            _ENDPOINT_ID,
            OpenApiParameter("status", str, enum=["pending", "delivered", "failed"], description="Default: all."),
        ],
        responses=WebhookDeliveryPageSerializer,
        examples=[
            OpenApiExample(
                "A delivery, second try", value={"items": [DELIVERY_EXAMPLE], "next": None}, response_only=True
            )
        ],
    )
    def get(self, request, tenant_id, webhook_id):
        endpoint = webhook_get(tenant=request.tenant, webhook_id=webhook_id)
        deliveries = WebhookDelivery.objects.filter(tenant=request.tenant, endpoint=endpoint)
        if (wanted := request.query_params.get("status")) is not None:
            if wanted not in ("pending", "delivered", "failed"):
                raise Invalid("status: pending, delivered or failed.", details={"status": wanted[:50]})
            deliveries = deliveries.filter(status=wanted)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookReplayView(APIView):
    @extend_schema(
        summary="Send a delivery again",
        description="Sends the delivery again, with the same body and `webhook-id`, as soon as the endpoint's "
        "earlier pending deliveries have gone, however it ended (a receiver that lost it, a failure given up); "
        "its retries start again. Answers the delivery, `pending`. No request body.\n\nErrors: 404 for a "
        "delivery that is not of this endpoint of the tenant.",
        parameters=[_ENDPOINT_ID, OpenApiParameter("delivery_id", str, OpenApiParameter.PATH)],
        request=None,
        responses={200: WebhookDeliverySerializer},
        examples=[OpenApiExample("Pending again", value={**DELIVERY_EXAMPLE, "status": "pending"}, response_only=True)],
    )
    def post(self, request, tenant_id, webhook_id, delivery_id):
        endpoint = webhook_get(tenant=request.tenant, webhook_id=webhook_id)
        delivery = WebhookDelivery.objects.filter(tenant=request.tenant, endpoint=endpoint, id=delivery_id).first()
        if delivery is None:
            raise NotFound("Delivery not found.")
        with transaction.atomic():
            delivery = webhook_delivery_replay(delivery=delivery)
        return Response(WebhookDeliverySerializer(delivery).data)
