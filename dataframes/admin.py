from django.contrib import admin
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyMixin
from dataframes.formats import json_columns
from dataframes.models import DataFrame
from dataframes.selectors import dataframe_samples

ADMIN_PREVIEW_ROWS = 20


@admin.register(DataFrame)
class DataFrameAdmin(admin.ModelAdmin):
    list_display = ["name", "shape", "conversation", "tenant", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "id", "conversation__id"]
    list_select_related = ["conversation"]
    fields = [
        "id",
        "name",
        "tenant",
        "conversation",
        "message",
        "shape",
        "schema",
        "storage_key",
        "created_at",
        "preview",
    ]
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False  # frames come from queries, with their Parquet file

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="shape (rows x columns)")
    def shape(self, frame: DataFrame) -> str:
        return f"{frame.row_count:,} x {len(frame.schema)}"

    @admin.display(description=f"first {ADMIN_PREVIEW_ROWS} rows")
    def preview(self, frame: DataFrame) -> str:
        try:
            table = dataframe_samples(frame=frame, rows=ADMIN_PREVIEW_ROWS)
        except Exception as exc:  # a missing object in storage should not break the admin page
            return f"(preview unavailable: {exc})"
        header = format_html_join("", "<th>{}</th>", ((name,) for name in table.column_names))
        rows = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (format_html_join("", "<td>{}</td>", ((value,) for value in row)),)
                for row in zip(*json_columns(table), strict=True)
            ),
        )
        return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", header, rows)


class DataFrameInline(ReadOnlyMixin, admin.TabularInline):
    """A conversation's data frames on its page (see turns/admin.py)."""

    model = DataFrame
    fields = ["name", "row_count", "message", "created_at"]
    readonly_fields = fields
    ordering = ["created_at"]
    extra = 0
    show_change_link = True
