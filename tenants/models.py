import json

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from core.ids import PublicIdField
from core.models import TenantOwned

TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"


class Tenant(models.Model):
    id = models.CharField(
        primary_key=True,
        max_length=63,
        validators=[RegexValidator(TENANT_ID_PATTERN, "Lowercase letters, digits and dashes, 2 to 63 long.")],
        help_text="The slug in API URLs: /tenants/<id>/api/v2/.",
    )
    name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Per API key; empty means the THROTTLE_RATE setting."
    )
    max_upload_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="Total stored file bytes; empty means the TENANT_MAX_UPLOAD_BYTES setting."
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(36_500)],
        help_text="Conversations idle this many days are deleted (an agent's own setting wins); empty: kept.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        permissions = [("use_playground", "Can use any tenant's API from the admin session (the playground)")]
        constraints = [
            models.CheckConstraint(condition=models.Q(id__regex=TENANT_ID_PATTERN), name="tenant_id_is_slug"),
        ]

    def __str__(self) -> str:
        return self.id


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> "ApiKeyQuerySet":
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A tenant's bearer key. The secret is shown once at creation; only its SHA-256 is stored."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False, help_text="Shown; identifies the key.")
    hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["tenant", "created_at"])]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix} ({self.tenant_id})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class DailyUsage(models.Model):
    """Requests (turns) and tokens per tenant per day (UTC), and per agent, engine and model, for billing,
    quotas and the tenant's usage report. The agent is its id, not a key: its usage outlives it. Rows
    counted before agents and models were recorded have them empty."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    agent_id = models.CharField(max_length=40, blank=True)
    engine = models.CharField(max_length=16, blank=True)
    model = models.CharField(max_length=200, blank=True)
    requests = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "agent_id", "engine", "model"], name="daily_usage_once_per_day_and_model"
            )
        ]
        verbose_name_plural = "daily usage"

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day}"


class WebhookEvent(models.TextChoices):
    MESSAGE_COMPLETED = "message.completed"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_CANCELLED = "message.cancelled"
    CONVERSATION_DELETED = "conversation.deleted"
    FILE_EXTRACTED = "file.extracted"


class WebhookEndpoint(TenantOwned):
    """A tenant's URL that gets the events it subscribed to, signed with its secret (Standard Webhooks),
    which is stored encrypted (core/crypto.py) and shown once."""

    id = PublicIdField(prefix="whk")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    events = ArrayField(models.CharField(max_length=32, choices=WebhookEvent.choices))
    active = models.BooleanField(default=True, help_text="An inactive endpoint gets no new deliveries.")
    secret_encrypted = models.TextField(editable=False)
    # While a process sends this endpoint's deliveries (their order kept), the others leave it alone.
    sending_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="webhook_endpoint_order")]

    def __str__(self) -> str:
        return f"{self.url} ({self.id})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # to be sent (again) at next_attempt_at
    DELIVERED = "delivered"
    FAILED = "failed"  # given up: WEBHOOK_RETRY_HOURS after the event


class WebhookDelivery(TenantOwned):
    """An event for one endpoint: written in the transaction of the event (an outbox), sent by the
    maintenance of any process until it is delivered or WEBHOOK_RETRY_HOURS have passed."""

    id = PublicIdField(prefix="whd")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=40, help_text="The event's id: `webhook-id`, the same on every attempt.")
    event_type = models.CharField(max_length=32, choices=WebhookEvent.choices)
    body = models.TextField(help_text="The JSON body, as signed and sent on every attempt.")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # The latest attempts, newest last: [{"at", "status_code", "error", "duration_ms"}].
    attempt_log = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "endpoint", "-created_at", "-id"], name="webhook_delivery_list"),
            # The sender's, across tenants: what is due, then each endpoint's pending deliveries in order.
            models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"), name="webhook_delivery_due"),
            # The purge's: ended deliveries past WEBHOOK_KEEP_DAYS.
            models.Index(fields=["created_at"], condition=~models.Q(status="pending"), name="webhook_delivery_ended"),
            models.Index(
                fields=["endpoint", "created_at", "id"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_pending",
            ),
        ]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.endpoint_id}"

    @property
    def payload_json(self) -> dict:
        return json.loads(self.body)
