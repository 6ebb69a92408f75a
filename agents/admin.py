from django.contrib import admin

from agents.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "tenant", "engine", "model", "created_at"]
    list_filter = ["engine", "tenant"]
    search_fields = ["id", "name", "tenant__id"]
    readonly_fields = ["id", "created_at", "updated_at"]
