from django.contrib import admin
from django.template.defaultfilters import truncatechars

from conversations.models import Conversation, Feedback, Message


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class MessageInline(ReadOnlyMixin, admin.TabularInline):
    model = Message
    fields = ["id", "role", "status", "excerpt", "parent", "output_tokens", "created_at"]
    readonly_fields = fields
    ordering = ["created_at", "id"]
    extra = 0
    show_change_link = True

    @admin.display(description="content")
    def excerpt(self, message: Message) -> str:
        return truncatechars(message.content, 120)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "tenant", "agent", "message_count", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["id", "name"]
    readonly_fields = ["id", "tenant", "agent", "current_message", "message_count", "created_at", "updated_at"]
    list_select_related = ["agent"]
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["id", "conversation", "role", "status", "created_at"]
    list_filter = ["status", "role", "tenant"]
    search_fields = ["id", "conversation__id"]
    list_select_related = ["conversation"]
    exclude = ["stream_index", "extra_events"]
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
