"""Routes under /tenants/<tenant_id>/api/v2/ (each app contributes its own)."""

from django.urls import include, path

urlpatterns = [
    path("", include("agents.urls")),
    path("", include("conversations.urls")),
    path("", include("dataframes.urls")),
    path("", include("files.urls")),
    path("", include("turns.urls")),
    path("", include("tenants.urls")),
]
