from django.contrib import admin
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from core.admin import ReadOnlyMixin
from files.apis import file_download_response
from files.models import File
from files.services import file_delete


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ["name", "content_type", "size", "extraction_status", "tenant", "created_at", "download"]
    list_filter = ["extraction_status", "origin", "tenant"]
    search_fields = ["id", "name", "sha256"]
    fields = [
        "id", "tenant", "conversation", "name", "content_type", "size", "sha256", "storage_key", "origin",
        "page_count", "extraction_status", "extraction_error", "created_at", "download",
    ]  # fmt: skip
    readonly_fields = fields
    list_select_related = ["tenant"]

    def has_add_permission(self, request) -> bool:
        return False  # files arrive through the API, which sniffs, limits and indexes them

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # nothing of a file is edited here (it can be downloaded or deleted)

    @admin.display(description="Download")
    def download(self, obj: File) -> str:
        return format_html('<a href="{}">download</a>', reverse("admin:files_file_download", args=[obj.pk]))

    def get_urls(self):
        download = self.admin_site.admin_view(self.download_view)
        return [path("<str:pk>/download/", download, name="files_file_download"), *super().get_urls()]

    def download_view(self, request, pk: str):
        if not self.has_view_permission(request):
            return self.admin_site.login(request)
        return file_download_response(get_object_or_404(File, pk=pk))

    def delete_model(self, request, obj: File) -> None:
        file_delete(file=obj)

    def delete_queryset(self, request, queryset) -> None:
        for file in queryset:
            file_delete(file=file)


class FileInline(ReadOnlyMixin, admin.TabularInline):
    """A conversation's files on its page (turns/admin.py puts it there: conversations sit below files)."""

    model = File
    fields = ["name", "content_type", "size", "extraction_status", "created_at"]
    readonly_fields = fields
    ordering = ["created_at"]
    extra = 0
    show_change_link = True
