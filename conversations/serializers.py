import json

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.titles import TITLE_MAX_CHARS
from conversations.models import FeedbackCategory, MessageStatus, Role, TitleSource, ToolCallStatus
from core.fields import StrictBooleanField, StrictCharField
from core.serializers import InputSerializer

METADATA_MAX_BYTES = 16 * 1024


# Output serializers are plain Serializers with their fields declared: a ModelSerializer builds its fields
# from the model again for every instance it represents.


class ConversationSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    agent_id = serializers.CharField(read_only=True)
    title_source = serializers.ChoiceField(choices=TitleSource.choices, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True, help_text="Last activity; bumped by new messages.")
    message_count = serializers.IntegerField(read_only=True)
    user_id = serializers.CharField(read_only=True, help_text="The application's end user (empty when not set).")
    archived = serializers.BooleanField(read_only=True, help_text="Hidden from the lists unless `archived=true`.")
    pinned = serializers.BooleanField(read_only=True, help_text="Listed first.")
    metadata = serializers.JSONField(read_only=True, help_text="The JSON object given by the client.")


def validate_metadata(value):
    if not isinstance(value, dict):
        raise serializers.ValidationError("Must be a JSON object.")
    if len(json.dumps(value)) > METADATA_MAX_BYTES:
        raise serializers.ValidationError(f"Must be at most {METADATA_MAX_BYTES} bytes as JSON.")
    return value


@extend_schema_field(OpenApiTypes.OBJECT)
class MetadataField(serializers.JSONField):
    """A JSONField declared as an object in the OpenAPI document: validate_metadata refuses anything else."""


def _user_id_field() -> StrictCharField:
    return StrictCharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="The application's end user, an opaque string of up to 255 characters (empty: none); lists "
        "and search filter on it (`user_id=`).",
    )


def _title_alias(help_text: str) -> StrictCharField:
    return StrictCharField(min_length=1, max_length=200, required=False, help_text=help_text)


class ConversationCreateSerializer(InputSerializer):
    aliases = {"title": "name"}

    name = StrictCharField(
        min_length=1,
        max_length=200,
        required=False,
        help_text="Without one, a title is proposed after the first reply.",
    )
    title = _title_alias("An alias of `name` (the conversation's title): give one of them.")
    user_id = _user_id_field()
    archived = StrictBooleanField(required=False, help_text="Hide it from the lists (`archived=true` shows them).")
    pinned = StrictBooleanField(required=False, help_text="List it first.")
    metadata = MetadataField(
        required=False, validators=[validate_metadata], help_text="A JSON object, at most 16 KiB as JSON."
    )


class ConversationUpdateSerializer(InputSerializer):
    aliases = {"title": "name"}

    name = StrictCharField(
        min_length=1, max_length=200, required=False, help_text="A proposed title never replaces it."
    )
    title = _title_alias("An alias of `name` (the conversation's title): give one of them.")
    user_id = _user_id_field()
    archived = StrictBooleanField(required=False, help_text="Hide it from the lists (`archived=true` shows them).")
    pinned = StrictBooleanField(required=False, help_text="List it first.")
    metadata = MetadataField(
        required=False,
        validators=[validate_metadata],
        help_text="Replaces the metadata whole: a JSON object, at most 16 KiB as JSON.",
    )


class CitationSerializer(serializers.Serializer):
    number = serializers.IntegerField(read_only=True)
    source_id = serializers.CharField(read_only=True, help_text="A file_ref, or a URL's identifier.")
    source_name = serializers.CharField(read_only=True)
    url = serializers.CharField(read_only=True, help_text="The cited page's URL; empty for a file of the conversation.")
    page = serializers.IntegerField(read_only=True, allow_null=True)
    snippet = serializers.CharField(read_only=True)
    relevance_score = serializers.FloatField(read_only=True)
    quality_score = serializers.FloatField(read_only=True)


class ToolCallSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True, source="call_id", help_text="The `id` of its stream events.")
    name = serializers.CharField(read_only=True)
    arguments = serializers.JSONField(read_only=True, help_text="As the engine decided them.")
    status = serializers.ChoiceField(
        choices=ToolCallStatus.choices,
        read_only=True,
        help_text="`ok`, `error` (the model got the error and went on), or `running` when the reply ended first.",
    )
    content = serializers.JSONField(
        read_only=True, allow_null=True, help_text="The result: a text, a JSON value, or a file reference."
    )
    content_type = serializers.CharField(read_only=True, help_text="`text`, `json`, `image` or `file`.")


class FeedbackSerializer(serializers.Serializer):
    thumbs_up = serializers.BooleanField(read_only=True)
    category = serializers.ChoiceField(choices=FeedbackCategory.choices, read_only=True, allow_blank=True)
    comment = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class FeedbackReviewSerializer(serializers.Serializer):
    """A feedback with what was rated, flat (a CSV row as well as a JSON object)."""

    message_id = serializers.CharField(read_only=True)
    conversation_id = serializers.CharField(read_only=True, source="message.conversation_id")
    agent_id = serializers.CharField(read_only=True, source="message.conversation.agent_id")
    thumbs_up = serializers.BooleanField(read_only=True)
    category = serializers.CharField(read_only=True)
    comment = serializers.CharField(read_only=True)
    question = serializers.SerializerMethodField(help_text="The user message the rated reply answered.")
    answer = serializers.CharField(read_only=True, source="message.content", help_text="The rated reply.")
    model = serializers.CharField(read_only=True, source="message.model", help_text="The reply's model.")
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def get_question(self, feedback) -> str:
        parent = feedback.message.parent
        return parent.content if parent is not None else ""


class FeedbackInputSerializer(InputSerializer):
    thumbs_up = serializers.BooleanField()
    category = serializers.ChoiceField(
        choices=FeedbackCategory.choices,
        required=False,
        allow_blank=True,
        help_text="Required when thumbs_up is false.",
    )
    comment = StrictCharField(max_length=2000, required=False, allow_blank=True, trim_whitespace=False)

    def validate(self, attrs):
        if not attrs["thumbs_up"] and not attrs.get("category"):
            raise serializers.ValidationError({"category": ["Required when thumbs_up is false."]})
        return attrs


class MessageSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    conversation_id = serializers.CharField(read_only=True)
    parent_id = serializers.CharField(read_only=True, allow_null=True)
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)
    content = serializers.CharField(read_only=True)
    thinking = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=MessageStatus.choices, read_only=True)
    error = serializers.CharField(read_only=True)
    input_tokens = serializers.IntegerField(read_only=True)
    output_tokens = serializers.IntegerField(read_only=True)
    attachments = serializers.ListField(
        child=serializers.CharField(max_length=40), read_only=True, help_text="File refs."
    )
    metadata = serializers.JSONField(read_only=True, help_text="The JSON object the client gave with the message.")
    engine = serializers.CharField(
        read_only=True, help_text="A reply's engine, as it was when the reply started (empty for a question)."
    )
    model = serializers.CharField(
        read_only=True, help_text="A reply's model (empty for a question, the builtin engine, or an older reply)."
    )
    finish_reason = serializers.CharField(
        read_only=True,
        help_text='Why a completed reply stopped: "stop", or "length" when its token limit cut it (`continue` '
        "extends it); empty otherwise.",
    )
    citations = CitationSerializer(many=True, read_only=True, source="cited")
    tool_calls = ToolCallSerializer(many=True, read_only=True, source="calls")
    feedback = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)
    completed_at = serializers.DateTimeField(read_only=True, allow_null=True)

    @extend_schema_field(FeedbackSerializer(allow_null=True))
    def get_feedback(self, message) -> dict | None:
        # Prefetched with the message (no query per row); absent for messages nobody rated.
        feedback = getattr(message, "feedback", None)
        return FeedbackSerializer(feedback).data if feedback is not None else None


class StateMessageSerializer(MessageSerializer):
    children = serializers.ListField(child=serializers.CharField(), source="child_ids", read_only=True)


class ConversationStateSerializer(ConversationSerializer):
    current_message_id = serializers.CharField(read_only=True, allow_null=True)
    messages = serializers.SerializerMethodField()
    messages_truncated = serializers.SerializerMethodField()

    # A field, not a raw $ref: the generator then also adds the StateMessage component the map points to.
    @extend_schema_field(serializers.DictField(child=StateMessageSerializer()))
    def get_messages(self, conversation) -> dict:
        return {m.id: StateMessageSerializer(m).data for m in self.context["messages"]}

    can_continue = serializers.SerializerMethodField(
        help_text="Whether generation should continue: the current message is a reply its token limit cut "
        '(`finish_reason: "length"`), which a post with `continue: true` extends.'
    )

    def get_messages_truncated(self, conversation) -> bool:
        return self.context["messages_truncated"]

    def get_can_continue(self, conversation) -> bool:
        shown = {m.id: m for m in self.context["messages"]}
        current = shown.get(conversation.current_message_id) if conversation.current_message_id else None
        if current is None and conversation.current_message_id:  # (older than the messages shown)
            current = conversation.current_message
        return (
            current is not None
            and current.role == Role.ASSISTANT
            and current.status == MessageStatus.COMPLETED
            and current.finish_reason == "length"
        )


class TenantConversationSerializer(ConversationSerializer):
    model = serializers.CharField(
        source="last_model", read_only=True, help_text="The model of its latest reply (empty: none recorded)."
    )
    engine = serializers.CharField(source="last_engine", read_only=True, help_text="The engine of its latest reply.")


class SearchHitSerializer(serializers.Serializer):
    id = serializers.CharField()
    title = serializers.CharField()
    updated_at = serializers.DateTimeField()
    agent_id = serializers.CharField()
    highlights = serializers.ListField(
        child=serializers.CharField(),
        help_text="Fragments of the title and messages; matches in <mark>…</mark>, the rest HTML-escaped.",
    )


BULK_DELETE_MAX_IDS = 100
ID_MAX_LENGTH = 40


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "maxLength": ID_MAX_LENGTH},
        "minItems": 1,
        "maxItems": BULK_DELETE_MAX_IDS,
        "uniqueItems": True,
    }
)
class ConversationIdsField(serializers.ListField):
    """1 to 100 conversation ids, each once (the schema says `uniqueItems`, which a ListField cannot)."""

    def __init__(self, **kwargs):
        child = StrictCharField(max_length=ID_MAX_LENGTH)
        super().__init__(child=child, min_length=1, max_length=BULK_DELETE_MAX_IDS, **kwargs)


class BulkDeleteSerializer(InputSerializer):
    ids = ConversationIdsField(help_text="Conversation ids, each once.")

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
    title = serializers.CharField(max_length=TITLE_MAX_CHARS)
