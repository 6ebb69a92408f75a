from django.db import models
from django.utils import timezone

from core.ids import PublicIdField
from core.models import TenantOwned


class TitleSource(models.TextChoices):
    USER = "user"
    PROPOSED = "proposed"


class Conversation(TenantOwned):
    id = PublicIdField(prefix="conv")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="conversations")
    name = models.CharField(max_length=200, blank=True)
    title_source = models.CharField(max_length=16, choices=TitleSource.choices, default=TitleSource.USER)
    metadata = models.JSONField(default=dict, blank=True)
    message_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now, help_text="Last activity; bumped by new messages.")

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "agent", "-updated_at", "-id"], name="conv_agent_activity"),
            models.Index(fields=["tenant", "-updated_at", "-id"], name="conv_tenant_activity"),
        ]

    def __str__(self) -> str:
        return f"{self.name or '(untitled)'} ({self.id})"
