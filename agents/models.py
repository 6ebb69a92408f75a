from django.core.validators import MaxValueValidator, MinValueValidator
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
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(36_500)],
        help_text="Its conversations idle this many days are deleted; empty: the tenant's setting.",
    )
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


TOOL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
MCP_SEPARATOR = "__"  # an MCP server's tool is `<server>__<tool>` to agents and the model
# No "__" (it separates the server's name from its tool's) and no trailing "_".
MCP_SERVER_NAME_PATTERN = r"^[A-Za-z](?:[A-Za-z0-9-]|_(?!_))*(?<!_)$"


class HttpTool(TenantOwned):
    """A tenant's own tool: Parley POSTs the model's arguments (checked against `parameters`) to `url`,
    signed with the tool's secret, and gives the model the answer (agents/http_tools.py). The header values
    and the secret are stored encrypted (core/crypto.py) and never shown again."""

    id = PublicIdField(prefix="tool")
    name = models.CharField(max_length=64, help_text="What agents' `options.tools` and the model call it.")
    description = models.TextField(max_length=2000, help_text="What the model reads to decide to call it.")
    parameters = models.JSONField(default=dict, help_text="The JSON Schema of its arguments (an object).")
    url = models.URLField(max_length=2000)
    header_names = models.JSONField(default=list, blank=True, editable=False)
    headers_encrypted = models.TextField(blank=True, editable=False)
    signing_secret_encrypted = models.TextField(editable=False)
    timeout_seconds = models.FloatField(default=10)
    max_response_bytes = models.PositiveIntegerField(default=100_000)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="http_tool_tenant_created")]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="http_tool_name_once")]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class McpServer(TenantOwned):
    """A tenant's MCP server (streamable HTTP): Parley lists its tools and offers those an agent names, as
    `<name>__<tool>` (or all of them when the agent names the server), and calls them (agents/mcp_tools.py).
    The header values are stored encrypted (core/crypto.py) and never shown again."""

    id = PublicIdField(prefix="mcp")
    name = models.CharField(max_length=32, help_text="Its tools are `<name>__<tool>` to agents and the model.")
    url = models.URLField(max_length=2000)
    header_names = models.JSONField(default=list, blank=True, editable=False)
    headers_encrypted = models.TextField(blank=True, editable=False)
    timeout_seconds = models.FloatField(default=10)
    max_response_bytes = models.PositiveIntegerField(default=100_000)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "MCP server"
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"], name="mcp_server_tenant_created")]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="mcp_server_name_once")]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"
