from django.db import models

from core.ids import PublicIdField
from core.models import TenantOwned


class Engine(models.TextChoices):
    BUILTIN = "builtin", "Builtin (offline, deterministic)"
    OPENAI = "openai", "OpenAI-compatible"


class Agent(TenantOwned):
    id = PublicIdField(prefix="agt")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, max_length=2000)
    system_prompt = models.TextField(blank=True, max_length=20000)
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.BUILTIN)
    model = models.CharField(max_length=200, blank=True, help_text="Model name for the openai engine.")
    options = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="agent_tenant_created")]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(engine="openai", model=""), name="agent_openai_engine_has_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"
