"""The turn API's contract: a post's body, and the post-and-wait answer; the conversation document of
export and import."""

import base64
import binascii
import math

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.engines.base import TOOL_CONTENT_TYPES
from conversations.models import FeedbackCategory, MessageStatus, QueuedTurnStatus, Role, TitleSource, ToolCallStatus
from conversations.serializers import ConversationSerializer, MessageSerializer, MetadataField, validate_metadata
from core.fields import StrictBooleanField, StrictCharField, StrictFloatField, StrictIntegerField
from core.serializers import InputSerializer
from dataframes.models import is_frame_name
from files.models import Origin
from turns.portability import DOCUMENT_FORMAT, DOCUMENT_VERSION


class MessagePostSerializer(InputSerializer):
    content = StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=settings.MESSAGE_MAX_CHARS,
        help_text="The question; not blank, unless the body is a regenerate or a continue (then empty or absent).",
    )
    attachments = serializers.ListField(
        child=StrictCharField(max_length=40),
        required=False,
        default=list,
        max_length=20,
        help_text="File refs of the conversation's files.",
    )
    parent_id = StrictCharField(
        required=False, max_length=40, help_text='Branch from this assistant message ("root": from the top).'
    )
    regenerate = StrictCharField(
        required=False,
        max_length=40,
        help_text="A new reply to the question this assistant message answers, beside it.",
    )
    reasoning = StrictBooleanField(
        required=False, default=False, help_text="Ask for the model's reasoning too (`thinking`)."
    )
    metadata = MetadataField(
        required=False,
        validators=[validate_metadata],
        help_text="A JSON object of yours kept with the user message (at most 16 KiB as JSON); not with "
        "regenerate or continue, which make no user message.",
    )
    if_busy = serializers.ChoiceField(
        choices=["reject", "enqueue", "interrupt"],
        required=False,
        help_text="While a reply runs in the conversation: answer 409 (reject); queue this turn to run when "
        "that reply and the turns queued before it have ended (enqueue); or cancel that reply, kept `cancelled` "
        "with its text, and run this one at once (interrupt). Default: the agent's `options.if_busy`, else reject.",
    )
    on_disconnect = serializers.ChoiceField(
        choices=["continue", "cancel"],
        required=False,
        default="continue",
        help_text="When the client goes away: the reply goes on and is stored (continue), or stops (cancel).",
    )

    def get_fields(self):
        fields = super().get_fields()
        fields["continue"] = StrictBooleanField(
            required=False, default=False, help_text="Extend the last assistant message instead of a new turn."
        )
        return fields

    def validate(self, attrs):
        content = attrs.get("content", "")
        modes = [name for name in ("regenerate", "continue") if attrs.get(name)]
        if len(modes) > 1:
            raise serializers.ValidationError({"continue": ["Use either regenerate or continue, not both."]})
        if modes:
            if content or attrs.get("parent_id") or attrs.get("attachments") or "metadata" in attrs:
                raise serializers.ValidationError(
                    {
                        modes[0]: [
                            "Takes no content, parent_id, attachments or metadata: it answers the existing message."
                        ]
                    }
                )
        elif not content.strip():
            raise serializers.ValidationError({"content": ["This field is required and may not be blank."]})
        return attrs


class MessagePostAndWaitSerializer(MessagePostSerializer):
    """The body of `POST .../messages`: a turn, and whether to wait for its reply."""

    background = StrictBooleanField(
        required=False,
        default=False,
        help_text="Answer 202 at once with the question and the `in_progress` reply, which runs on as usual "
        "(follow its stream, or read it later); with an Idempotency-Key, one turn per key whatever the retries.",
    )
    webhook_url = StrictCharField(
        required=False,
        max_length=2000,
        help_text="With `background`: one of the tenant's active webhook endpoints (`/webhooks`), exactly its "
        "`url`, which gets this reply's `message.completed`, `message.failed` or `message.cancelled` whatever "
        "events it subscribed to.",
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs.get("webhook_url") and not attrs.get("background"):
            raise serializers.ValidationError({"webhook_url": ["Only with background: true."]})
        return attrs


class QueuedTurnSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="Cancel it with `DELETE .../queue/{id}` while it is queued.")
    conversation_id = serializers.CharField()
    status = serializers.ChoiceField(choices=QueuedTurnStatus.choices)
    content = serializers.CharField(source="request.content", help_text="The question, as posted.")
    user_message_id = serializers.CharField(help_text="Once started: the question's message (else empty).")
    message_id = serializers.CharField(help_text="Once started: its reply (else empty).")
    error = serializers.CharField(help_text="Why it could not start (`failed`).")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)


class TurnMessageSerializer(MessageSerializer):
    """A message of the turn just made, built from the rows the turn wrote: its feedback is not looked up
    (feedback given while the reply ran shows on the next read)."""

    def get_feedback(self, message) -> None:
        return None


class TurnResponseSerializer(serializers.Serializer):
    conversation = ConversationSerializer()
    messages = MessageSerializer(many=True, help_text="The user message and the reply.")
    current_message_id = serializers.CharField()


class NewTurnResponseSerializer(TurnResponseSerializer):
    """The answer of a turn built from the rows it wrote."""

    messages = TurnMessageSerializer(many=True)


# --- The conversation document: what an export renders and an import validates ------------------------

# A message's text above this would pass PostgreSQL's full-text index (1 MiB of words); its reasoning has none.
CONTENT_MAX_CHARS = 400_000
THINKING_MAX_CHARS = 1_000_000
# An import is one transaction: these keep it short (20,000 messages take about 9 s).
DOCUMENT_MESSAGES_MAX = 10_000
DOCUMENT_FILES_MAX = 1000


@extend_schema_field({"type": "string", "format": "byte"})
class Base64Field(serializers.Field):
    """Bytes, as standard base64 in JSON."""

    default_error_messages = {"invalid": "Must be a base64 string."}

    def to_representation(self, value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    def to_internal_value(self, data) -> bytes:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            self.fail("invalid")


def _finite(value: float) -> None:
    if not math.isfinite(value):
        raise serializers.ValidationError("Must be a finite number.")


def _text(**kwargs) -> StrictCharField:
    return StrictCharField(allow_blank=True, trim_whitespace=False, **kwargs)


def _optional_text(max_length: int | None = None, **kwargs) -> StrictCharField:
    return _text(max_length=max_length, required=False, default="", **kwargs)


def _when(**kwargs) -> serializers.DateTimeField:
    return serializers.DateTimeField(required=False, **kwargs)


def _count() -> StrictIntegerField:
    return StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False, default=0)


class DocumentCitationSerializer(InputSerializer):
    number = StrictIntegerField(min_value=0, max_value=2**31 - 1)
    source_id = _text(max_length=200, help_text="A file's `file_ref` (remapped on import) or a URL's identifier.")
    source_name = _optional_text(255)
    url = serializers.URLField(max_length=2000, required=False, allow_blank=True, default="")
    page = StrictIntegerField(min_value=0, max_value=2**31 - 1, required=False, allow_null=True, default=None)
    snippet = _optional_text(10_000)
    relevance_score = StrictFloatField(required=False, default=0, validators=[_finite])
    quality_score = StrictFloatField(required=False, default=0, validators=[_finite])
    tool_call_id = _optional_text(100, help_text="The tool call whose result cited it.")


class DocumentToolCallSerializer(InputSerializer):
    id = StrictCharField(max_length=100, help_text="The engine's id of the call, unique within its message.")
    name = _text(max_length=100)
    arguments = serializers.JSONField(required=False, default=dict)
    status = serializers.ChoiceField(choices=ToolCallStatus.choices)
    content = serializers.JSONField(required=False, allow_null=True, default=None)
    content_type = serializers.ChoiceField(choices=[(kind, kind) for kind in TOOL_CONTENT_TYPES], default="text")


class DocumentFeedbackSerializer(InputSerializer):
    thumbs_up = StrictBooleanField()
    category = serializers.ChoiceField(choices=FeedbackCategory.choices, allow_blank=True, default="")
    comment = _optional_text(2000)
    created_at = _when()
    updated_at = _when(help_text="Ignored on import: the time of the import.")

    def validate(self, attrs):
        if not attrs["thumbs_up"] and not attrs["category"]:
            raise serializers.ValidationError({"category": ["Required when thumbs_up is false."]})
        return attrs


class DocumentMessageSerializer(InputSerializer):
    id = StrictCharField(max_length=40, help_text="Unique in the document; the import gives the message a new one.")
    parent_id = StrictCharField(max_length=40, allow_null=True, required=False, default=None)
    role = serializers.ChoiceField(choices=Role.choices)
    content = _text(max_length=CONTENT_MAX_CHARS)
    thinking = _optional_text(THINKING_MAX_CHARS)
    status = serializers.ChoiceField(
        choices=MessageStatus.choices,
        default=MessageStatus.COMPLETED,
        help_text="A reply that was `in_progress` is imported `cancelled`.",
    )
    error = _optional_text(10_000)
    input_tokens = _count()
    output_tokens = _count()
    attachments = serializers.ListField(child=StrictCharField(max_length=40), required=False, default=list)
    metadata = MetadataField(required=False, default=dict, validators=[validate_metadata])
    engine = _optional_text(16)
    model = _optional_text(200)
    finish_reason = serializers.ChoiceField(choices=["", "stop", "length"], default="")
    created_at = _when(help_text="Kept on import (the history's times); default: the import's, in order.")
    completed_at = _when(allow_null=True, default=None)
    citations = DocumentCitationSerializer(many=True, required=False, default=list)
    tool_calls = DocumentToolCallSerializer(many=True, required=False, default=list)
    feedback = DocumentFeedbackSerializer(required=False, allow_null=True, default=None)

    def validate(self, attrs):
        for name, key in (("citations", "number"), ("tool_calls", "id")):
            seen = [item[key] for item in attrs[name]]
            if len(set(seen)) != len(seen):
                raise serializers.ValidationError({name: [f"Two have the same `{key}`."]})
        if attrs["feedback"] is not None and attrs["role"] != Role.ASSISTANT:
            raise serializers.ValidationError({"feedback": ["Feedback is for assistant messages."]})
        return attrs


def _bytes_field() -> Base64Field:
    return Base64Field(
        source="content",
        required=False,
        allow_null=True,
        help_text="The bytes (required to import); null with `include_bytes=false` or when they were missing "
        "from storage.",
    )


class DocumentFileSerializer(InputSerializer):
    id = StrictCharField(max_length=40, help_text="The file's `file_ref`; the import gives it a new one.")
    name = _text(max_length=255)
    content_type = _optional_text(255, help_text="Ignored on import: sniffed from the bytes again.")
    size = StrictIntegerField(min_value=0, required=False, help_text="Ignored on import: the bytes' length.")
    sha256 = StrictCharField(max_length=64, required=False, allow_blank=True, help_text="Checked on import.")
    origin = serializers.ChoiceField(choices=Origin.choices, default=Origin.UPLOAD)
    message_id = StrictCharField(max_length=40, allow_null=True, required=False, default=None)
    page_count = StrictIntegerField(min_value=0, allow_null=True, required=False, help_text="Ignored on import.")
    created_at = _when()
    content_base64 = _bytes_field()

    def validate_content_base64(self, content: bytes | None) -> bytes | None:
        if content is not None and len(content) > settings.FILE_MAX_BYTES:
            raise serializers.ValidationError(f"Larger than the per-file limit of {settings.FILE_MAX_BYTES} bytes.")
        return content


class DocumentFrameSerializer(InputSerializer):
    id = StrictCharField(max_length=40, help_text="The data frame's id; the import gives it a new one.")
    name = StrictCharField(max_length=64)
    row_count = StrictIntegerField(min_value=0, required=False, help_text="Ignored on import: read from the bytes.")
    schema = serializers.JSONField(required=False, help_text="Ignored on import: read from the bytes.")
    message_id = StrictCharField(max_length=40, allow_null=True, required=False, default=None)
    created_at = _when()
    content_base64 = _bytes_field()

    def validate_name(self, name: str) -> str:
        if not is_frame_name(name):
            raise serializers.ValidationError("A letter or _, then up to 63 letters, digits or _.")
        return name


class DocumentConversationSerializer(InputSerializer):
    id = StrictCharField(max_length=40, required=False, help_text="Ignored on import.")
    agent_id = StrictCharField(max_length=40, required=False, help_text="Ignored on import: the path's agent.")
    name = _optional_text(200)
    title_source = serializers.ChoiceField(choices=TitleSource.choices, default=TitleSource.USER)
    user_id = _optional_text(255)
    metadata = MetadataField(required=False, default=dict, validators=[validate_metadata])
    archived = StrictBooleanField(required=False, default=False)
    pinned = StrictBooleanField(required=False, default=False)
    created_at = _when()
    updated_at = _when(help_text="Ignored on import: an import is activity.")
    current_message_id = StrictCharField(
        max_length=40, allow_null=True, required=False, default=None, help_text="The active branch's tip."
    )


class ConversationDocumentSerializer(InputSerializer):
    format = serializers.ChoiceField(choices=[DOCUMENT_FORMAT])
    version = serializers.ChoiceField(choices=[DOCUMENT_VERSION])
    exported_at = _when()
    conversation = DocumentConversationSerializer()
    messages = DocumentMessageSerializer(
        many=True, max_length=DOCUMENT_MESSAGES_MAX, help_text="Every message of the tree, parents first."
    )
    files = DocumentFileSerializer(many=True, required=False, default=list, max_length=DOCUMENT_FILES_MAX)
    data_frames = DocumentFrameSerializer(many=True, required=False, default=list, max_length=DOCUMENT_FILES_MAX)

    def validate(self, attrs):
        """The references within the document: unique ids, parents listed before their children, a current
        message, files and frames of its messages."""
        errors: dict[str, list[str]] = {}
        messages: set[str] = set()
        for index, message in enumerate(attrs["messages"]):
            if message["id"] in messages:
                errors[f"messages[{index}].id"] = [f"{message['id']!r} is the id of an earlier message."]
            elif message["parent_id"] is not None and message["parent_id"] not in messages:
                errors[f"messages[{index}].parent_id"] = [f"No earlier message {message['parent_id']!r}."]
            messages.add(message["id"])
        current = attrs["conversation"]["current_message_id"]
        if current is not None and current not in messages:
            errors["conversation.current_message_id"] = [f"No message {current!r}."]
        stored: set[str] = set()
        names: set[str] = set()
        for kind in ("files", "data_frames"):
            for index, entry in enumerate(attrs[kind]):
                if entry["id"] in stored:
                    errors[f"{kind}[{index}].id"] = [f"{entry['id']!r} is the id of an earlier file or frame."]
                if entry["message_id"] is not None and entry["message_id"] not in messages:
                    errors[f"{kind}[{index}].message_id"] = [f"No message {entry['message_id']!r}."]
                if entry.get("content") is None:
                    errors[f"{kind}[{index}].content_base64"] = [
                        "The bytes are required to import (export with include_bytes=true)."
                    ]
                if kind == "data_frames" and entry["name"].lower() in names:
                    errors[f"{kind}[{index}].name"] = [f"Another data frame is named {entry['name']!r}."]
                stored.add(entry["id"])
                names.add(entry["name"].lower() if kind == "data_frames" else "")
        if errors:
            first = next(iter(errors))
            raise serializers.ValidationError({first: errors[first]})
        return attrs
