import json
import re

import jsonschema
from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.engines.openai import model_allowed
from agents.models import MCP_SERVER_NAME_PATTERN, TOOL_NAME_PATTERN, Agent, Engine
from agents.selectors import tenant_tool_names
from core.fields import StrictCharField, StrictFloatField, StrictIntegerField
from core.schema import refuses_unknown_keys
from core.serializers import InputSerializer, remote_url_validate

TOOL_NAMES = ["search_files", "read_file", "run_sql", "list_data_frames", "export_data_frame", "chart_data_frame"]


@refuses_unknown_keys
class AgentOptionsSerializer(serializers.Serializer):
    temperature = StrictFloatField(required=False, min_value=0, max_value=2, help_text="Sampling temperature.")
    max_tokens = StrictIntegerField(
        required=False, min_value=1, max_value=200_000, help_text="Longest reply, in tokens."
    )
    history_tokens = StrictIntegerField(
        required=False, min_value=100, max_value=2_000_000, help_text="Budget for the history sent to the engine."
    )
    tools = serializers.ListField(
        child=StrictCharField(max_length=64),
        required=False,
        max_length=50,
        help_text="The tools the engine may call: builtin ones (`search_files`, `read_file`, `run_sql`, "
        "`list_data_frames`, `export_data_frame`, `chart_data_frame`; all of them when the list is absent), "
        "the tenant's HTTP tools by name (`/tools`), and its MCP servers' tools as `<server>__<tool>` or every "
        "tool of a server as `<server>` (`/mcp-servers`).",
    )
    chunk_delay_ms = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=60_000,
        help_text="Builtin engine only: pace of the reply, one chunk every this many ms (load tests).",
    )
    if_busy = serializers.ChoiceField(
        choices=["reject", "enqueue", "interrupt"],
        required=False,
        help_text="What a message posted while a reply runs does, unless the post says (`if_busy`): 409 "
        "(reject, the default), wait its turn (enqueue), or cancel the running reply (interrupt).",
    )
    on_crash = serializers.ChoiceField(
        choices=["continue", "fail"],
        required=False,
        help_text="When the server process running a reply dies: another continues it from the text already "
        "streamed, on the same stream (continue, the default), or ends it `failed` with that text (fail).",
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: ["Unknown option."] for key in unknown})
        return super().to_internal_value(data)


class AgentSerializer(serializers.ModelSerializer):
    options = AgentOptionsSerializer(required=False)

    class Meta:
        model = Agent
        fields = [
            "id",
            "name",
            "description",
            "system_prompt",
            "engine",
            "model",
            "options",
            "retention_days",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


class AgentInputSerializer(InputSerializer):
    name = StrictCharField(max_length=200, min_length=1)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True)
    system_prompt = StrictCharField(
        max_length=20000, required=False, allow_blank=True, trim_whitespace=False, help_text="Kept as written."
    )
    engine = serializers.ChoiceField(choices=Engine.choices, required=False, help_text="Default: builtin.")
    model = StrictCharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Required for the openai engine: one of the models the operator offers.",
    )
    options = AgentOptionsSerializer(required=False, help_text="Only the keys listed; any other is refused.")
    retention_days = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=36_500,
        help_text="Its conversations idle this many days are deleted, with their files and data frames; null: "
        "the tenant's setting (by default, kept).",
    )

    def validate(self, attrs):
        instance = self.instance
        engine = attrs.get("engine", instance.engine if instance else Engine.BUILTIN)
        model = attrs.get("model", instance.model if instance else "")
        if engine == Engine.OPENAI and not model:
            raise serializers.ValidationError({"model": ["Required for the openai engine."]})
        if engine == Engine.OPENAI and not model_allowed(model):
            allowed = ", ".join(settings.OPENAI_MODELS)
            raise serializers.ValidationError({"model": [f"Not offered here; choose one of: {allowed}."]})
        names = [name for name in attrs.get("options", {}).get("tools", ()) if name not in TOOL_NAMES]
        if names:
            own = tenant_tool_names(tenant=self.context["tenant"], names=names)
            if unknown := [name for name in names if name not in own]:
                raise serializers.ValidationError({"options": {"tools": [f"Unknown tool: {unknown[0]}."]}})
        return attrs


# --- Tenants' HTTP tools ---------------------------------------------------------------------------------

PARAMETERS_MAX_BYTES = 16 * 1024
HEADERS_MAX = 20
# Set by Parley on every call: a tool's own headers may not replace them.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "user-agent"}
    | {"webhook-id", "webhook-timestamp", "webhook-signature"}
)
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")


def _has_key(value, keys: set[str]) -> bool:
    if isinstance(value, dict):
        return any(key in keys or _has_key(item, keys) for key, item in value.items())
    return isinstance(value, list) and any(_has_key(item, keys) for item in value)


class _RemoteSerializer(serializers.Serializer):
    """What tools and MCP servers show alike: where Parley sends requests, never the header values."""

    id = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    url = serializers.CharField(read_only=True)
    header_names = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="The names of its headers; values are never shown."
    )
    timeout_seconds = serializers.FloatField(read_only=True)
    max_response_bytes = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class HttpToolSerializer(_RemoteSerializer):
    description = serializers.CharField(read_only=True)
    parameters = serializers.JSONField(read_only=True, help_text="The JSON Schema of the arguments.")


class HttpToolCreatedSerializer(HttpToolSerializer):
    signing_secret = serializers.CharField(
        read_only=True,
        help_text="Shown once, here: the receiver checks each request's `webhook-signature` with it.",
    )


@extend_schema_field(OpenApiTypes.OBJECT)
class JsonSchemaField(serializers.JSONField):
    """A JSON Schema: an object in the OpenAPI document (validate_parameters refuses anything else)."""


class _RemoteInputSerializer(InputSerializer):
    """What tools and MCP servers share: where Parley sends requests, with which headers, how long it waits
    and how much it reads. Any other field is refused."""

    reserved_headers: frozenset[str] = frozenset()  # set by Parley on every request: not the tenant's

    url = StrictCharField(max_length=2000, help_text="HTTPS (plain HTTP only within TOOL_ALLOWED_NETWORKS).")
    headers = serializers.DictField(
        child=StrictCharField(max_length=4096, trim_whitespace=False),
        required=False,
        help_text="Sent with each request; stored encrypted and never shown again. Replaced whole on update.",
    )
    timeout_seconds = StrictFloatField(required=False, min_value=0.5, max_value=60, help_text="Default 10.")
    max_response_bytes = StrictIntegerField(
        required=False, min_value=1, max_value=1_000_000, help_text="Default 100,000."
    )

    def validate_url(self, value: str) -> str:
        return remote_url_validate(value)

    def validate_headers(self, value: dict) -> dict:
        if len(value) > HEADERS_MAX:
            raise serializers.ValidationError(f"At most {HEADERS_MAX} headers.")
        for name, header in value.items():
            if not _HEADER_NAME.fullmatch(name) or name.lower() in self.reserved_headers:
                raise serializers.ValidationError(f"{name!r}: not a header name the tenant may set.")
            if any(ch in header for ch in "\r\n\x00"):
                raise serializers.ValidationError(f"{name!r}: a value holds no line break.")
        return value


class HttpToolInputSerializer(_RemoteInputSerializer):
    reserved_headers = RESERVED_HEADERS

    name = StrictCharField(
        max_length=64,
        validators=[RegexValidator(TOOL_NAME_PATTERN, "Letters, digits, _ and -, starting with a letter.")],
        help_text="Unique among the tenant's tools, and none of the builtin tools' names.",
    )
    description = StrictCharField(min_length=1, max_length=2000, help_text="What the model reads.")
    parameters = JsonSchemaField(
        required=False, help_text='A JSON Schema of type object (default: {"type": "object"}), at most 16 KiB.'
    )

    def validate_name(self, value: str) -> str:
        if value in TOOL_NAMES:
            raise serializers.ValidationError("A builtin tool has this name.")
        return value

    def validate_parameters(self, value):
        if not isinstance(value, dict) or value.get("type") != "object":
            raise serializers.ValidationError('Must be a JSON Schema object with "type": "object".')
        if len(json.dumps(value)) > PARAMETERS_MAX_BYTES:
            raise serializers.ValidationError(f"Must be at most {PARAMETERS_MAX_BYTES} bytes as JSON.")
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise serializers.ValidationError(f"Not a valid JSON Schema: {exc.message}") from None
        if _has_key(value, {"pattern", "patternProperties"}):  # a regular expression could stall the server
            raise serializers.ValidationError("`pattern` and `patternProperties` are not supported.")
        return value


# --- Tenants' MCP servers --------------------------------------------------------------------------------

MCP_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "user-agent", "accept"}
    | {"mcp-session-id", "mcp-protocol-version", "last-event-id"}
)


class McpServerSerializer(_RemoteSerializer):
    pass


class McpToolSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The name agents and the model use: `<server>__<tool>`.")
    description = serializers.CharField()
    parameters = serializers.JSONField(help_text="The JSON Schema of its arguments, as the model gets it.")


class McpServerInputSerializer(_RemoteInputSerializer):
    reserved_headers = MCP_RESERVED_HEADERS

    name = StrictCharField(
        max_length=32,
        validators=[
            RegexValidator(MCP_SERVER_NAME_PATTERN, "Letters, digits, - and single _, starting with a letter.")
        ],
        help_text="Its tools are `<name>__<tool>`; unique among the tenant's MCP servers and tools.",
    )

    def validate_name(self, value: str) -> str:
        if value in TOOL_NAMES:
            raise serializers.ValidationError("A builtin tool has this name.")
        return value
