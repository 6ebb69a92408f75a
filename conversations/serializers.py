import json

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from conversations.models import Citation, Conversation, Feedback, FeedbackCategory, Message
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
    name = StrictCharField(
        min_length=1,
        max_length=200,
        required=False,
        help_text="Without one, a title is proposed after the first reply.",
    )
    metadata = serializers.JSONField(required=False, validators=[validate_metadata])


class ConversationUpdateSerializer(serializers.Serializer):
    name = StrictCharField(min_length=1, max_length=200, required=False)
    metadata = serializers.JSONField(required=False, validators=[validate_metadata])


class CitationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Citation
        fields = ["number", "source_id", "source_name", "url", "page", "snippet", "relevance_score", "quality_score"]
        read_only_fields = fields


class FeedbackSerializer(serializers.ModelSerializer):
    class Meta:
        model = Feedback
        fields = ["thumbs_up", "category", "comment", "created_at", "updated_at"]
        read_only_fields = fields


class FeedbackInputSerializer(serializers.Serializer):
    thumbs_up = serializers.BooleanField()
    category = serializers.ChoiceField(choices=FeedbackCategory.choices, required=False, allow_blank=True)
    comment = StrictCharField(max_length=2000, required=False, allow_blank=True, trim_whitespace=False)

    def validate(self, attrs):
        if not attrs["thumbs_up"] and not attrs.get("category"):
            raise serializers.ValidationError({"category": ["Required when thumbs_up is false."]})
        return attrs


class MessageSerializer(serializers.ModelSerializer):
    conversation_id = serializers.CharField(read_only=True)
    parent_id = serializers.CharField(read_only=True, allow_null=True)
    citations = CitationSerializer(many=True, read_only=True, source="cited")
    feedback = serializers.SerializerMethodField()

    @extend_schema_field(FeedbackSerializer(allow_null=True))
    def get_feedback(self, message) -> dict | None:
        # Prefetched with the message (no query per row); absent for messages nobody rated.
        feedback = getattr(message, "feedback", None)
        return FeedbackSerializer(feedback).data if feedback is not None else None

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation_id",
            "parent_id",
            "role",
            "content",
            "thinking",
            "status",
            "error",
            "input_tokens",
            "output_tokens",
            "attachments",
            "citations",
            "feedback",
            "created_at",
            "completed_at",
        ]
        read_only_fields = fields


class StateMessageSerializer(MessageSerializer):
    children = serializers.ListField(child=serializers.CharField(), source="child_ids", read_only=True)

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "children"]
        read_only_fields = fields


class ConversationStateSerializer(ConversationSerializer):
    current_message_id = serializers.CharField(read_only=True, allow_null=True)
    messages = serializers.SerializerMethodField()
    messages_truncated = serializers.SerializerMethodField()

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "current_message_id", "messages", "messages_truncated"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": {"$ref": "#/components/schemas/StateMessage"}})
    def get_messages(self, conversation) -> dict:
        return {m.id: StateMessageSerializer(m).data for m in self.context["messages"]}

    def get_messages_truncated(self, conversation) -> bool:
        return self.context["messages_truncated"]


class MessagePostSerializer(serializers.Serializer):
    content = StrictCharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=settings.MESSAGE_MAX_CHARS
    )
    attachments = serializers.ListField(
        child=StrictCharField(max_length=40), required=False, default=list, max_length=20, help_text="File refs."
    )
    parent_id = StrictCharField(
        required=False, max_length=40, help_text='Branch from this assistant message ("root": from the top).'
    )
    regenerate = StrictCharField(
        required=False, max_length=40, help_text="A new reply replacing this assistant message."
    )
    reasoning = serializers.BooleanField(required=False, default=False)
    on_disconnect = serializers.ChoiceField(choices=["continue", "cancel"], required=False, default="continue")

    def get_fields(self):
        fields = super().get_fields()
        fields["continue"] = serializers.BooleanField(
            required=False, default=False, help_text="Extend the last assistant message instead of a new turn."
        )
        return fields

    def validate(self, attrs):
        content = attrs.get("content", "")
        modes = [name for name in ("regenerate", "continue") if attrs.get(name)]
        if len(modes) > 1:
            raise serializers.ValidationError({"continue": ["Use either regenerate or continue, not both."]})
        if modes:
            if content or attrs.get("parent_id") or attrs.get("attachments"):
                raise serializers.ValidationError(
                    {modes[0]: ["Takes no content, parent_id or attachments: it answers the existing message."]}
                )
        elif not content.strip():
            raise serializers.ValidationError({"content": ["This field is required and may not be blank."]})
        return attrs


class TurnResponseSerializer(serializers.Serializer):
    conversation = ConversationSerializer()
    messages = MessageSerializer(many=True)
    current_message_id = serializers.CharField()


class TenantConversationSerializer(ConversationSerializer):
    model = serializers.CharField(source="agent.model", read_only=True)
    engine = serializers.CharField(source="agent.engine", read_only=True)

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "model", "engine"]
        read_only_fields = fields


class SearchHitSerializer(serializers.Serializer):
    id = serializers.CharField()
    title = serializers.CharField()
    updated_at = serializers.DateTimeField()
    agent_id = serializers.CharField()
    highlights = serializers.ListField(
        child=serializers.CharField(),
        help_text="Fragments of the title and messages; matches in <mark>…</mark>, the rest HTML-escaped.",
    )


class BulkDeleteSerializer(serializers.Serializer):
    ids = serializers.ListField(child=StrictCharField(max_length=40), min_length=1, max_length=100)

    def validate_ids(self, ids):
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError("Contains duplicate ids.")
        return ids


class BulkDeleteResultSerializer(serializers.Serializer):
    deleted = serializers.IntegerField()
    failed = serializers.ListField(child=serializers.CharField(), help_text="Ids not found (or not yours).")


class DeleteAllResultSerializer(serializers.Serializer):
    deleted = serializers.IntegerField()


class TitleSerializer(serializers.Serializer):
    title = serializers.CharField()
