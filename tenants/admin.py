from django.contrib import admin, messages
from django.utils import timezone

from tenants.models import ApiKey, DailyUsage, Tenant, WebhookDelivery, WebhookEndpoint
from tenants.services import api_key_create


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ["prefix", "name", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "name", "created_at", "last_used_at", "revoked_at"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "is_active", "requests_per_minute", "retention_days", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["id", "name"]
    inlines = [ApiKeyInline]

    def get_readonly_fields(self, request, obj=None):
        return ["id", "created_at"] if obj else ["created_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "tenant", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "tenant__id"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["tenant", "name"]
        return ["tenant", "name", "prefix", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "tenant"] if obj else []

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, secret = api_key_create(tenant=obj.tenant, name=obj.name)
        obj.pk, obj.prefix, obj.hash, obj.created_at = key.pk, key.prefix, key.hash, key.created_at
        messages.warning(request, f"New API key (shown only once, copy it now): {secret}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        messages.success(request, f"Revoked {count} key(s).")


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = ["tenant", "day", "agent_id", "engine", "model", "requests", "input_tokens", "output_tokens"]
    list_filter = ["tenant"]
    date_hierarchy = "day"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Tenants manage their endpoints through the API (the secret is shown to them once); operators see
    them, pause them and delete them here."""

    list_display = ["id", "tenant", "url", "active", "created_at"]
    list_filter = ["active", "tenant"]
    search_fields = ["id", "url", "tenant__id"]
    fields = ["id", "tenant", "url", "description", "events", "active", "created_at"]
    readonly_fields = ["id", "tenant", "url", "events", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "endpoint", "event_type", "status", "attempts", "next_attempt_at", "created_at"]
    list_filter = ["status", "event_type", "tenant"]
    search_fields = ["id", "event_id", "endpoint__id"]
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
