from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.views import healthz
from files.v1_apis import FilesV1View, FileV1View
from turns.stateless import ConversationV1View

admin.site.site_header = "Parley administration"
admin.site.site_title = "Parley"
admin.site.index_title = "Tenants, agents and their conversations"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("tenants/<str:tenant_id>/api/v2/", include("config.api_urls")),
    path("v1/conversation", ConversationV1View.as_view(), name="v1-conversation"),
    path("v1/files", FilesV1View.as_view(), name="v1-files"),
    path("v1/files/<str:file_ref>", FileV1View.as_view(), name="v1-file"),
]

handler400 = "core.errors.bad_request_view"
handler403 = "core.errors.permission_denied_view"
handler404 = "core.errors.not_found_view"
handler500 = "core.errors.server_error_view"
