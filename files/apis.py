from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.models import Conversation
from conversations.selectors import conversation_get
from core.errors import Invalid, NotFound, PayloadTooLarge, RangeNotSatisfiable
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
from files.signing import shown_inline, signed_url, signed_url_verify, storage_is_s3
from files.storage import LimitedUploadHandler, preview_kind

PREVIEW_TEXT_CHARS = 10_000

_413 = OpenApiResponse(ErrorSerializer, description="A size or count limit was passed (`payload_too_large`).")
_BYTES = OpenApiResponse(OpenApiTypes.BINARY, description="The stored bytes, with their stored content type.")

# What the OpenAPI document shows (ids as core.ids makes them).
_CONVERSATION_PATH = (
    "/tenants/acme/api/v2/agents/agt_01jngadm50r4vdt6e95f73xrq5/conversations/conv_01jngak3y04wqfkxg2cnc1hw48"
)
FILE_EXAMPLE = {
    "file_ref": "file_01jngarkq08g41awjffpe1rcbc",
    "conversation_id": "conv_01jngak3y04wqfkxg2cnc1hw48",
    "name": "invoices-2025-03.pdf",
    "content_type": "application/pdf",
    "size": 284113,
    "sha256": "9f2c1a7e5b3d48c0a6e1f4b2d7c9e0a3b5f8d1c4e7a0b3d6f9c2e5a8b1d4f7c0",
    "origin": "upload",
    "message_id": None,
    "page_count": 4,
    "extraction_status": "done",
    "extraction_error": "",
    "created_at": "2025-03-04T10:21:00.337902Z",
}
RELATED_DOCUMENT_EXAMPLE = {
    "source_id": "file_01jngarkq08g41awjffpe1rcbc",
    "name": "invoices-2025-03.pdf",
    "link": f"https://parley.example.com{_CONVERSATION_PATH}/files/download/?file_ref=file_01jngarkq08g41awjffpe1rcbc",
    "page": 2,
    "citation_number": 1,
    "snippet": "Total for March 2025: 48,250.00 EUR",
    "relevance_score": 0.82,
    "updated_date": "2025-03-04",
    "quality_score": 0.9,
    "content": "[1] invoices-2025-03.pdf, page 2: Total for March 2025: 48,250.00 EUR, payable in 30 days",
    "content_type": "text",
}
SIGNED_TOKEN_EXAMPLE = (
    "eyJ0IjoiYWNtZSIsImYiOiJmaWxlXzAxam5nYXJrcTA4ZzQxYXdqZmZwZTFyY2JjIiwiZSI6MTc0MTA4NjAwMH0"
    ":1xa7Gg:k0EkX4bXpJqlz6PjmJwan6b_meyMh4F2Y3t5Oj_Md2M"
)
_FILE_RESPONSE = OpenApiExample("A file", value=FILE_EXAMPLE, response_only=True)
UPLOAD_RULES = (
    "`multipart/form-data` with one or more `files` parts. Limits: FILE_MAX_BYTES per file (50 MiB by default), "
    "FILE_MAX_PER_REQUEST files per request (20 by default), the other form fields DATA_UPLOAD_MAX_MEMORY_SIZE "
    "(2 MiB by default), and the tenant's total stored bytes (TENANT_MAX_UPLOAD_BYTES, 10 GiB by default, or "
    "the tenant's own); over a limit the answer is 413 and nothing of the request is stored. An empty file is "
    "refused. The content type is sniffed from the bytes (the extension only tells text formats apart); the "
    "name loses any path and control characters and is cut to 255 characters. The text is extracted before "
    "the answer, within bounds of time, pages and characters: `extraction_status` is `done`, `failed` (with "
    "`extraction_error`) or `unsupported` (a type without text); the extracted text is what replies search "
    "and cite."
)


_RANGE_PARAM = OpenApiParameter(
    "Range",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="`bytes=first-last`, `bytes=first-` or `bytes=-count`: that part of the file alone (206).",
)


def _conversation(request, agent_id: str, conversation_id: str) -> Conversation:
    return conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)


class LimitedUploads:
    """A view mixin: the upload limits (LimitedUploadHandler) hold from the first read of the body, whoever
    reads it: the view (uploaded_files), or before it the CSRF check of a staff session, which reads a
    form's fields."""

    def initialize_request(self, request, *args, **kwargs):
        request.upload_handlers = [LimitedUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)


def uploaded_files(request) -> list:
    """The request's `files` parts, streamed to temporary files within the upload limits (a LimitedUploads
    view)."""
    try:
        return request.FILES.getlist("files")
    except RequestDataTooBig:
        raise PayloadTooLarge("The form fields besides the files are too large.") from None
    except SuspiciousOperation as exc:
        raise Invalid(f"files: {exc}") from None


_BYTE_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.IGNORECASE)
_CHUNK_BYTES = 64 * 1024


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a `Range: bytes=...` header, or None to send the whole file: no header,
    several ranges, or one that does not parse (RFC 9110 lets a server ignore those). RangeNotSatisfiable
    (416) for a range that starts past the end, or an empty suffix."""
    found = _BYTE_RANGE.fullmatch((header or "").strip())
    if found is None or found.groups() == ("", "") or size == 0:  # (an empty file: the whole of it, 200)
        return None
    first, last = found.groups()
    if first == "":  # the last N bytes
        if int(last) == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - int(last)), size - 1
    if int(first) >= size:
        raise RangeNotSatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return (int(first), end) if end >= int(first) else None


def _span(stream, first: int, length: int) -> Iterator[bytes]:
    try:
        stream.seek(first)
        while length > 0 and (data := stream.read(min(_CHUNK_BYTES, length))):
            length -= len(data)
            yield data
    finally:
        stream.close()


def file_download_response(file: File, *, request=None, inline: bool = False) -> HttpResponseBase:
    """The exact stored bytes with the stored content type and an RFC 6266 Content-Disposition: the whole
    file, or the one range a `Range` header asks for (206; `Accept-Ranges: bytes`). `inline` (a preview
    link): PDFs and raster images are shown by the browser, sandboxed; other types stay attachments."""
    # If-Range: the whole file, always. With S3, a seek would fetch the whole object: its presigned URLs
    # (previews) answer ranges themselves.
    asked = request is not None and "If-Range" not in request.headers and not storage_is_s3()
    span = byte_range(request.headers.get("Range") if asked else None, file.size)
    try:
        stream = default_storage.open(file.storage_key, "rb")
    except FileNotFoundError:
        raise NotFound("The file's bytes are missing from storage.", details={"file_ref": file.id}) from None
    if span is None:
        response = FileResponse(stream, content_type=file.content_type)
        response["Content-Length"] = str(file.size)
    else:
        first, last = span
        response = StreamingHttpResponse(_span(stream, first, last - first + 1), status=206)
        response["Content-Type"] = file.content_type
        response["Content-Range"] = f"bytes {first}-{last}/{file.size}"
        response["Content-Length"] = str(last - first + 1)
    shown = inline and shown_inline(file.content_type)  # (sandboxed: no scripts, no same-origin)
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in file.name)
    disposition = "inline" if shown else "attachment"  # (RFC 6266: an ASCII fallback, and the UTF-8 name)
    response["Content-Disposition"] = f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(file.name)}"
    response["Accept-Ranges"] = "bytes"
    response["X-Content-Type-Options"] = "nosniff"
    if shown:
        response["Content-Security-Policy"] = "sandbox"
    return response


@extend_schema_view(
    list=extend_schema(
        summary="List the conversation's files, newest first",
        description="The conversation's files, newest first, each with its sniffed content type, size, "
        "SHA-256, `origin` and text extraction state. A page at a time: `limit` (1 to 100, default 20) and the "
        "`next` cursor of the previous page.\n\nErrors: 400 for a `limit` out of range or a malformed `next` "
        "cursor; 404 for a conversation that is not the tenant's under this agent.",
        examples=[_FILE_RESPONSE],
    ),
    create=extend_schema(
        summary="Upload files to the conversation",
        description=f"Stores files in the conversation, all of them or none; messages then attach them by "
        f"`file_ref` and the agent searches and cites them. {UPLOAD_RULES}\n\nErrors: 400 for no `files` part, "
        "an empty file or a malformed form; 404 for a conversation that is not the tenant's under this agent; "
        "413 for a limit passed (`details.limit` names it); 415 for a body that is not `multipart/form-data`.",
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: FileUploadResultSerializer, 413: _413},
        examples=[OpenApiExample("One file stored", value={"items": [FILE_EXAMPLE]}, response_only=True)],
    ),
    destroy=extend_schema(
        summary="Delete a file; returns it",
        description="Deletes the file, its extracted text and its stored bytes, and answers the file as it "
        "was. Messages that attached or cited it keep its `file_ref`; it can no longer be attached, downloaded "
        "or searched.\n\nErrors: 404 for a file that is not of this conversation of the tenant.",
        responses={200: FileSerializer},
        examples=[_FILE_RESPONSE],
    ),
)
class FileViewSet(LimitedUploads, viewsets.GenericViewSet):
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
        description="The exact stored bytes of a file of the conversation, with its stored content type, its "
        "size as Content-Length and a Content-Disposition `attachment` naming it (an ASCII fallback and the "
        "UTF-8 name). `Range: bytes=first-last` (or `first-`, or `-count` for the last bytes) answers that "
        "part alone, 206 with `Content-Range`; several ranges, or a request with `If-Range`, get the whole "
        "file. The path works with or without its final slash.\n\nErrors: 400 without `file_ref`; 404 for a "
        "file that is not of this conversation of the tenant, or whose bytes are missing from storage; 416 for "
        "a range that starts past the end (`Content-Range: bytes */<size>`).",
        parameters=[DownloadQuerySerializer, _RANGE_PARAM],
        responses={(200, "*/*"): _BYTES, (206, "*/*"): _BYTES, 416: ErrorSerializer},
        examples=[
            OpenApiExample(
                "A file of the conversation", value=FILE_EXAMPLE["file_ref"], parameter_only=("file_ref", "query")
            )
        ],
    )
    def download(self, request, tenant_id, agent_id, conversation_id):
        conversation = _conversation(request, agent_id, conversation_id)
        query = DownloadQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        file = file_get(tenant=request.tenant, conversation=conversation, file_ref=query.validated_data["file_ref"])
        return file_download_response(file, request=request)

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
        "content": document.tool_call.content if document.tool_call is not None else None,
        "content_type": document.tool_call.content_type if document.tool_call is not None else None,
    }


@extend_schema_view(
    list=extend_schema(
        summary="The sources cited in the conversation, each once",
        description="Every source the conversation's replies cite, once each, ordered by `source_id`: a file "
        "(its `file_ref`) or a web page. Each comes with its first citation (the reply's `[number]`, page, "
        "snippet, relevance and quality scores from 0 to 1) and a `link`: for a file of the conversation its "
        "download URL in this API, for a web page its URL. A page at a time: `limit` (1 to 100, default 20) and "
        "the `next` cursor of the previous page.\n\nErrors: 400 for a `limit` out of range or a malformed "
        "`next` cursor; 404 for a conversation that is not the tenant's under this agent.",
        responses={200: RelatedDocumentSerializer(many=True)},
        examples=[OpenApiExample("A cited file", value=RELATED_DOCUMENT_EXAMPLE, response_only=True)],
    ),
    retrieve=extend_schema(
        summary="One cited source, with its citations and passages",
        description="A source cited in the conversation, as in the list, with every citation of it in the "
        "conversation (message, number, page, snippet, scores) and, for a file, the first 100 passages of its "
        "extracted text.\n\nErrors: 404 for a conversation that is not the tenant's under this agent, or a "
        "source it does not cite.",
        responses={200: RelatedDocumentDetailSerializer},
        examples=[
            OpenApiExample(
                "A cited file",
                value={
                    **RELATED_DOCUMENT_EXAMPLE,
                    "citations": [
                        {
                            "message_id": "msg_01jngb9320er8x3d7fsjzd70va",
                            "number": 1,
                            "page": 2,
                            "snippet": "Total for March 2025: 48,250.00 EUR",
                            "relevance_score": 0.82,
                            "quality_score": 0.9,
                        }
                    ],
                    "passages": [
                        {"ordinal": 0, "page": 1, "text": "ACME Corp. Invoices, March 2025. Summary by customer"},
                        {"ordinal": 1, "page": 2, "text": "Total for March 2025: 48,250.00 EUR, payable in 30 days"},
                    ],
                },
                response_only=True,
            )
        ],
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
        description="What a client needs to show a file of the conversation or a file it cites: its coarse "
        "`content_type` (`text`, `pdf`, `image` or `binary`), the first 10,000 characters of a text file, its "
        "page count and size, and a signed `url` that downloads it without an API key for 15 minutes.\n\n"
        "Errors: 404 for a conversation that is not the tenant's under this agent, or a source that is neither "
        "one of its files nor a file it cites (a web page has no preview).",
        responses={200: PreviewSerializer},
        examples=[
            OpenApiExample(
                "A PDF",
                value={
                    "source_id": FILE_EXAMPLE["file_ref"],
                    "name": FILE_EXAMPLE["name"],
                    "content_type": "pdf",
                    "url": f"https://parley.example.com/tenants/acme/api/v2/files/signed/{SIGNED_TOKEN_EXAMPLE}",
                    "text": None,
                    "page_count": 4,
                    "size": 284113,
                },
                response_only=True,
            )
        ],
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
        description="The bytes of the file a preview's signed URL names, as `GET .../files/download/` gives "
        "them (ranges included); no API key: the signature is the credential, for 15 minutes, and only while the "
        "tenant is active. A PDF or an image (not SVG) comes `inline`, for the browser to show, "
        "sandboxed (`Content-Security-Policy: sandbox`, `X-Content-Type-Options: nosniff`); any other type is "
        "an attachment.\n\nErrors: 403 for a signature that is invalid, expired or of another tenant; 404 for a "
        "file deleted since; 416 for a range that starts past the end.",
        auth=[],
        parameters=[_RANGE_PARAM],
        responses={(200, "*/*"): _BYTES, (206, "*/*"): _BYTES, 403: ErrorSerializer, 416: ErrorSerializer},
        examples=[
            OpenApiExample(
                "A signed token",
                value=SIGNED_TOKEN_EXAMPLE,
                parameter_only=("token", "path"),
            )
        ],
    )
    def get(self, request, tenant_id: str, token: str):
        file_ref = signed_url_verify(tenant_id=tenant_id, token=token)
        file = file_get_for_signed_url(tenant_id=tenant_id, file_ref=file_ref)
        return file_download_response(file, request=request, inline=True)
