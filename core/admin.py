"""What admin pages of several apps share."""


class ReadOnlyMixin:
    """For a ModelAdmin or an inline of rows that only the API writes: viewed (and deleted where allowed), never
    added or edited here, so the page has no Save button."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
