"""The conversation's admin page with what it owns from the apps above it (files, data frames): registered
here, at the top of the layers, over conversations' own registration."""

from django.contrib import admin

from conversations.admin import ConversationAdmin, MessageInline
from conversations.models import Conversation
from dataframes.admin import DataFrameInline
from files.admin import FileInline

admin.site.unregister(Conversation)


@admin.register(Conversation)
class ConversationWithDataAdmin(ConversationAdmin):
    inlines = [MessageInline, FileInline, DataFrameInline]
