"""The turn API's contract: a post's body, and the post-and-wait answer."""

from django.conf import settings
from rest_framework import serializers

from conversations.serializers import ConversationSerializer, MessageSerializer, MetadataField, validate_metadata
from core.fields import StrictBooleanField, StrictCharField
from core.serializers import InputSerializer


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
