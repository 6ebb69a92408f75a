from django.contrib import admin

from conversations.models import Conversation


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "tenant", "agent", "message_count", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["id", "name"]
    readonly_fields = ["id", "tenant", "agent", "message_count", "created_at", "updated_at"]
    list_select_related = ["agent"]
