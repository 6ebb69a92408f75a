from django.urls import path

from files.apis import FileViewSet, RelatedDocumentViewSet, SignedDownloadView

CONVERSATION = "agents/<str:agent_id>/conversations/<str:conversation_id>"

urlpatterns = [
    path(f"{CONVERSATION}/files", FileViewSet.as_view({"get": "list", "post": "create"}), name="file-list"),
    path(f"{CONVERSATION}/files/download/", FileViewSet.as_view({"get": "download"}), name="file-download"),
    # The same without the slash (clients drop it), before files/<file_ref> would take it; documented once.
    path(f"{CONVERSATION}/files/download", FileViewSet.as_view({"get": "download"}, schema=None)),
    path(f"{CONVERSATION}/files/<str:file_ref>", FileViewSet.as_view({"delete": "destroy"}), name="file-detail"),
    path(
        f"{CONVERSATION}/related-documents",
        RelatedDocumentViewSet.as_view({"get": "list"}),
        name="related-document-list",
    ),
    path(
        f"{CONVERSATION}/related-documents/<str:source_id>",
        RelatedDocumentViewSet.as_view({"get": "retrieve"}),
        name="related-document-detail",
    ),
    path(
        f"{CONVERSATION}/related-documents/<str:source_id>/preview",
        RelatedDocumentViewSet.as_view({"get": "preview"}),
        name="related-document-preview",
    ),
    path("files/signed/<str:token>", SignedDownloadView.as_view(), name="file-signed-download"),
]
