from rest_framework import serializers

from core.fields import StrictBooleanField, StrictCharField
from core.serializers import InputSerializer, remote_url_validate
from tenants.models import DeliveryStatus, WebhookEvent


class WebhookEndpointSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    url = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
    events = serializers.ListField(child=serializers.ChoiceField(choices=WebhookEvent.choices), read_only=True)
    active = serializers.BooleanField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="Shown once, here: the receiver checks each delivery's `webhook-signature` with it "
        "(Standard Webhooks).",
    )


class WebhookEndpointInputSerializer(InputSerializer):
    url = StrictCharField(max_length=2000, help_text="HTTPS (plain HTTP only within TOOL_ALLOWED_NETWORKS).")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEvent.choices),
        min_length=1,
        max_length=len(WebhookEvent.choices),
        help_text="The events it gets: " + ", ".join(f"`{value}`" for value in WebhookEvent.values) + ".",
    )
    description = StrictCharField(max_length=200, required=False, allow_blank=True)
    active = StrictBooleanField(required=False, help_text="An inactive endpoint gets no new deliveries.")

    def validate_url(self, value: str) -> str:
        return remote_url_validate(value)


class WebhookAttemptSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True, help_text="The receiver's answer; null: none.")
    error = serializers.CharField(help_text="Why it did not count as delivered (empty when it did).")
    duration_ms = serializers.IntegerField()


class WebhookDeliverySerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    event_id = serializers.CharField(read_only=True, help_text="`webhook-id`: the same on every attempt.")
    event_type = serializers.ChoiceField(choices=WebhookEvent.choices, read_only=True)
    status = serializers.ChoiceField(
        choices=DeliveryStatus.choices,
        read_only=True,
        help_text="`pending` (to be tried at `next_attempt_at`), `delivered` (a 2xx answer), `failed` (given up).",
    )
    attempts = serializers.IntegerField(read_only=True)
    next_attempt_at = serializers.DateTimeField(read_only=True)
    delivered_at = serializers.DateTimeField(read_only=True, allow_null=True)
    attempt_log = WebhookAttemptSerializer(many=True, read_only=True, help_text="The latest attempts, oldest first.")
    payload = serializers.JSONField(read_only=True, source="payload_json", help_text="The body sent.")
    created_at = serializers.DateTimeField(read_only=True)
