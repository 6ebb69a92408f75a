import json

from django.contrib import admin
from django.template.defaultfilters import truncatechars

from conversations.models import Conversation, Feedback, Message, ToolCall
from core.admin import ReadOnlyMixin


class MessageColumns:
    """A message's columns that are not fields, for the list and the conversation page."""

    @admin.display(description="content")
    def excerpt(self, message: Message) -> str:
        return truncatechars(message.content, 120)

    @admin.display(description="feedback")
    def rating(self, message: Message) -> str:
        feedback = getattr(message, "feedback", None)
        if feedback is None:
            return ""
        return "👍" if feedback.thumbs_up else f"👎 {feedback.category}"


class MessageInline(MessageColumns, ReadOnlyMixin, admin.TabularInline):
    model = Message
    fields = ["id", "role", "status", "excerpt", "input_tokens", "output_tokens", "rating", "created_at"]
    readonly_fields = fields
    ordering = ["created_at", "id"]
    extra = 0
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("feedback")


class ToolCallInline(ReadOnlyMixin, admin.TabularInline):
    """The tools the engine called while writing the message, in order, with their results."""

    model = ToolCall
    fields = ["call_id", "name", "call_arguments", "status", "content_type", "result"]
    readonly_fields = fields
    ordering = ["position"]
    extra = 0

    @admin.display(description="arguments")
    def call_arguments(self, call: ToolCall) -> str:
        return truncatechars(json.dumps(call.arguments, ensure_ascii=False), 300)

    @admin.display(description="result")
    def result(self, call: ToolCall) -> str:
        content = call.content if isinstance(call.content, str) else json.dumps(call.content, ensure_ascii=False)
        return truncatechars(content, 500)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "tenant", "agent", "message_count", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["id", "name", "agent__id", "agent__name"]
    readonly_fields = ["id", "tenant", "agent", "current_message", "message_count", "created_at", "updated_at"]
    list_select_related = ["agent"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(MessageColumns, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "status", "excerpt", "output_tokens", "rating", "created_at"]
    list_filter = ["status", "role", "tenant"]
    search_fields = ["id", "conversation__id", "content"]
    list_select_related = ["conversation", "feedback"]
    date_hierarchy = "created_at"

    exclude = ["stream_index", "extra_events"]
    inlines = [ToolCallInline]
    readonly_fields = [
        "id",
        "tenant",
        "conversation",
        "parent",
        "role",
        "content",
        "thinking",
        "status",
        "error",
        "input_tokens",
        "output_tokens",
        "attachments",
        "created_at",
        "completed_at",
    ]


@admin.register(Feedback)
class FeedbackAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["message", "tenant", "thumbs_up", "category", "updated_at"]
    list_filter = ["thumbs_up", "category", "tenant"]
    search_fields = ["message__id", "comment"]
    fields = ["message", "tenant", "thumbs_up", "category", "comment", "created_at", "updated_at"]
    readonly_fields = fields
