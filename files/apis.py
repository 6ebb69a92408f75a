from __future__ import annotations

from urllib.parse import quote

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.storage import default_storage
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.models import Conversation
from conversations.selectors import conversation_get
from core.errors import Invalid, NotFound, PayloadTooLarge
from core.pagination import keyset_pagination, parse_limit
from core.schema import ErrorSerializer
from files.models import File
from files.selectors import (
    RelatedDocument,
    file_get,
    file_get_for_signed_url,
    file_list,
    preview_file_get,
    related_document_details,
    related_document_get,
    related_document_list,
)
from files.serializers import (
    DownloadQuerySerializer,
    FileSerializer,
    FileUploadResultSerializer,
    FileUploadSerializer,
    PreviewSerializer,
    RelatedDocumentDetailSerializer,
    RelatedDocumentSerializer,
)
from files.services import file_create_many, file_delete
from files.signing import signed_url, signed_url_verify
from files.storage import LimitedUploadHandler, preview_kind

PREVIEW_TEXT_CHARS = 10_000

_413 = OpenApiResponse(ErrorSerializer, description="A size or count limit was passed (`payload_too_large`).")
_BYTES = OpenApiResponse(OpenApiTypes.BINARY, description="The stored bytes, with their stored content type.")


def _conversation(request, agent_id: str, conversation_id: str) -> Conversation:
    return conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)


def uploaded_files(request) -> list:
    """The request's `files` parts, streamed to temporary files within the upload limits."""
    request._request.upload_handlers = [LimitedUploadHandler(request._request)]
    try:
        return request.FILES.getlist("files")
    except RequestDataTooBig:
        raise PayloadTooLarge("The form fields besides the files are too large.") from None
    except SuspiciousOperation as exc:
        raise Invalid(f"files: {exc}") from None


def file_download_response(file: File) -> FileResponse:
    """The exact stored bytes with the stored content type and an RFC 6266 Content-Disposition."""
    try:
        stream = default_storage.open(file.storage_key, "rb")
    except FileNotFoundError:
        raise NotFound("The file's bytes are missing from storage.", details={"file_ref": file.id}) from None
    response = FileResponse(stream, content_type=file.content_type)
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in file.name)
    response["Content-Disposition"] = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file.name)}"
    response["Content-Length"] = str(file.size)
    return response


@extend_schema_view(
    list=extend_schema(summary="List the conversation's files, newest first"),
    create=extend_schema(
        summary="Upload files to the conversation",
        description="`multipart/form-data` with one or more `files` fields. Limits: FILE_MAX_BYTES per file "
        "(default 50 MiB), FILE_MAX_PER_REQUEST files (default 20) and the tenant's total; over a limit the "
        "answer is 413 and nothing of the request is stored. The content type is sniffed from the bytes.",
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: FileUploadResultSerializer, 413: _413},
    ),
    destroy=extend_schema(summary="Delete a file; returns it", responses={200: FileSerializer}),
)
class FileViewSet(viewsets.GenericViewSet):
    serializer_class = FileSerializer
    pagination_class = keyset_pagination("-created_at", "-id")
    parser_classes = [MultiPartParser]  # only `create` reads a body

    def list(self, request, tenant_id, agent_id, conversation_id):
        conversation = _conversation(request, agent_id, conversation_id)
        page = self.paginate_queryset(file_list(tenant=request.tenant, conversation=conversation))
        return self.get_paginated_response(FileSerializer(page, many=True).data)

    def create(self, request, tenant_id, agent_id, conversation_id):
        conversation = _conversation(request, agent_id, conversation_id)
        files = file_create_many(
            tenant=request.tenant, conversation_id=conversation.id, uploads=uploaded_files(request)
        )
        return Response({"items": FileSerializer(files, many=True).data}, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Download a file's bytes",
        parameters=[DownloadQuerySerializer],
        responses={(200, "*/*"): _BYTES},
    )
    def download(self, request, tenant_id, agent_id, conversation_id):
        conversation = _conversation(request, agent_id, conversation_id)
        query = DownloadQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        file = file_get(tenant=request.tenant, conversation=conversation, file_ref=query.validated_data["file_ref"])
        return file_download_response(file)

    def destroy(self, request, tenant_id, agent_id, conversation_id, file_ref):
        conversation = _conversation(request, agent_id, conversation_id)
        file = file_get(tenant=request.tenant, conversation=conversation, file_ref=file_ref)
        body = FileSerializer(file).data
        file_delete(file=file)
        return Response(body)


def _related_document_body(request, conversation: Conversation, document: RelatedDocument) -> dict:
    citation, file = document.citation, document.file
    link = citation.url
    if file is not None and file.conversation_id == conversation.id:
        path = reverse(
            "file-download",
            kwargs={
                "tenant_id": conversation.tenant_id,
                "agent_id": conversation.agent_id,
                "conversation_id": conversation.id,
            },
        )
        link = request.build_absolute_uri(f"{path}?file_ref={file.id}")
    return {
        "source_id": citation.source_id,
        "name": file.name if file is not None else citation.source_name,
        "link": link,
        "page": citation.page,
        "citation_number": citation.number,
        "snippet": citation.snippet,
        "relevance_score": citation.relevance_score,
        "updated_date": file.created_at.date().isoformat() if file is not None else None,
        "quality_score": citation.quality_score,
    }


@extend_schema_view(
    list=extend_schema(
        summary="The sources cited in the conversation, each once",
        responses={200: RelatedDocumentSerializer(many=True)},
    ),
    retrieve=extend_schema(
        summary="One cited source, with its citations and passages", responses={200: RelatedDocumentDetailSerializer}
    ),
)
class RelatedDocumentViewSet(viewsets.GenericViewSet):
    serializer_class = RelatedDocumentSerializer
    # For the schema and the `limit`/`next` parameters; the selector pages by source id itself because each
    # source's first citation comes from a DISTINCT ON query.
    pagination_class = keyset_pagination("source_id")

    def list(self, request, tenant_id, agent_id, conversation_id):
        conversation = _conversation(request, agent_id, conversation_id)
        documents, next_cursor = related_document_list(
            tenant=request.tenant,
            conversation=conversation,
            limit=parse_limit(request.query_params.get("limit")),
            cursor=request.query_params.get("next") or None,
        )
        items = [_related_document_body(request, conversation, document) for document in documents]
        return Response({"items": RelatedDocumentSerializer(items, many=True).data, "next": next_cursor})

    def retrieve(self, request, tenant_id, agent_id, conversation_id, source_id):
        conversation = _conversation(request, agent_id, conversation_id)
        document = related_document_get(tenant=request.tenant, conversation=conversation, source_id=source_id)
        body = _related_document_body(request, conversation, document)
        body.update(related_document_details(tenant=request.tenant, conversation=conversation, document=document))
        return Response(RelatedDocumentDetailSerializer(body).data)

    @extend_schema(
        summary="Preview a source: its first 10,000 characters (text) and a signed URL valid 15 minutes",
        responses={200: PreviewSerializer},
    )
    def preview(self, request, tenant_id, agent_id, conversation_id, source_id):
        conversation = _conversation(request, agent_id, conversation_id)
        file = preview_file_get(tenant=request.tenant, conversation=conversation, source_id=source_id)
        kind = preview_kind(file.content_type)
        text = None
        if kind == "text":
            with default_storage.open(file.storage_key, "rb") as stream:
                text = stream.read(PREVIEW_TEXT_CHARS * 4).decode("utf-8", errors="replace")[:PREVIEW_TEXT_CHARS]
        body = {
            "source_id": file.id,
            "name": file.name,
            "content_type": kind,
            "url": signed_url(file=file, request=request),
            "text": text,
            "page_count": file.page_count,
            "size": file.size,
        }
        return Response(PreviewSerializer(body).data)


class SignedDownloadView(APIView):
    """A preview link: no API key, the signature (valid 15 minutes) is the credential."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        summary="Download a file through a signed preview URL (no API key)",
        auth=[],
        responses={(200, "*/*"): _BYTES, 403: ErrorSerializer},
    )
    def get(self, request, tenant_id: str, token: str):
        file_ref = signed_url_verify(tenant_id=tenant_id, token=token)
        return file_download_response(file_get_for_signed_url(tenant_id=tenant_id, file_ref=file_ref))
