import json

from rest_framework import serializers

from conversations.models import Conversation
from core.fields import StrictCharField

METADATA_MAX_BYTES = 16 * 1024


class ConversationSerializer(serializers.ModelSerializer):
    agent_id = StrictCharField(read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "name", "agent_id", "title_source", "created_at", "updated_at", "message_count", "metadata"]
        read_only_fields = fields


def validate_metadata(value):
    if not isinstance(value, dict):
        raise serializers.ValidationError("Must be a JSON object.")
    if len(json.dumps(value)) > METADATA_MAX_BYTES:
        raise serializers.ValidationError(f"Must be at most {METADATA_MAX_BYTES} bytes as JSON.")
    return value


class ConversationCreateSerializer(serializers.Serializer):
    name = StrictCharField(min_length=1, max_length=200)
    metadata = serializers.JSONField(required=False, validators=[validate_metadata])


class ConversationUpdateSerializer(serializers.Serializer):
    name = StrictCharField(min_length=1, max_length=200, required=False)
    metadata = serializers.JSONField(required=False, validators=[validate_metadata])
