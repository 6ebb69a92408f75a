from django.conf import settings
from rest_framework import serializers

from agents.engines.openai import model_allowed
from agents.models import Agent, Engine
from core.fields import StrictCharField, StrictFloatField, StrictIntegerField
from core.schema import refuses_unknown_keys

TOOL_NAMES = ["search_files", "read_file", "run_sql", "list_data_frames"]


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
        child=serializers.ChoiceField(choices=TOOL_NAMES),
        required=False,
        max_length=len(TOOL_NAMES),
        help_text="The tools the engine may call.",
    )
    chunk_delay_ms = StrictIntegerField(
        required=False,
        min_value=0,
        max_value=60_000,
        help_text="Builtin engine only: pace of the reply, one chunk every this many ms (load tests).",
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
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


class AgentInputSerializer(serializers.Serializer):
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

    def validate(self, attrs):
        instance = self.instance
        engine = attrs.get("engine", instance.engine if instance else Engine.BUILTIN)
        model = attrs.get("model", instance.model if instance else "")
        if engine == Engine.OPENAI and not model:
            raise serializers.ValidationError({"model": ["Required for the openai engine."]})
        if engine == Engine.OPENAI and not model_allowed(model):
            allowed = ", ".join(settings.OPENAI_MODELS)
            raise serializers.ValidationError({"model": [f"Not offered here; choose one of: {allowed}."]})
        return attrs
