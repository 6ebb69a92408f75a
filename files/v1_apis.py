"""Tenant-level files for the stateless API: `/v1/files` (upload, list) and `/v1/files/{file_ref}`."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from core.pagination import DEFAULT_LIMIT, MAX_LIMIT, KeysetPagination
from core.schema import V1ErrorSerializer
from core.views import V1APIView
from files.apis import FILE_EXAMPLE, UPLOAD_RULES, LimitedUploads, uploaded_files
from files.selectors import file_get, file_list
from files.serializers import FileSerializer, FileUploadSerializer
from files.services import file_create_many, file_delete

V1_FILES = inline_serializer("V1Files", {"success": serializers.BooleanField(), "files": FileSerializer(many=True)})
_V1_FILE = {**FILE_EXAMPLE, "file_ref": "file_01jngay3g0ktrrva35ffrhkr7a", "conversation_id": None}


class FilesV1View(LimitedUploads, V1APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="List the tenant-level files (newest first)",
        description="The files uploaded with `POST /v1/files` (a conversation's files are not among them), "
        f"newest first, a page at a time: `limit` (1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}) and the `next` "
        "cursor of the previous page (null on the last page).\n\nErrors: 400 for a `limit` out of range or a "
        "malformed `next` cursor.",
        parameters=[
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                description=f"Page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
            ),
            OpenApiParameter("next", str, description="The `next` cursor of the previous page."),
        ],
        examples=[
            OpenApiExample("A file", value={"success": True, "items": [_V1_FILE], "next": None}, response_only=True)
        ],
        responses={
            200: inline_serializer(
                "V1FileList",
                {
                    "success": serializers.BooleanField(),
                    "items": FileSerializer(many=True),
                    "next": serializers.CharField(allow_null=True),
                },
            ),
        },
    )
    def get(self, request):
        paginator = KeysetPagination(("-created_at", "-id"))
        page = paginator.paginate_queryset(file_list(tenant=request.tenant, conversation=None), request)
        return Response({"success": True, "items": FileSerializer(page, many=True).data, "next": paginator.next_cursor})

    @extend_schema(
        summary="Upload files for the stateless API; refer to them in messages' `files`",
        description="Stores tenant-level files, all of them or none, for `POST /v1/conversation` messages to "
        f"attach by `file_ref`. {UPLOAD_RULES}\n\nErrors: 400 for no `files` part, an empty file or a malformed "
        "form; 413 for a limit passed; 415 for a body that is not `multipart/form-data`.",
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: V1_FILES, 413: V1ErrorSerializer, 429: V1ErrorSerializer},
        examples=[OpenApiExample("One file stored", value={"success": True, "files": [_V1_FILE]}, response_only=True)],
    )
    def post(self, request):
        files = file_create_many(tenant=request.tenant, conversation_id=None, uploads=uploaded_files(request))
        return Response(
            {"success": True, "files": FileSerializer(files, many=True).data}, status=status.HTTP_201_CREATED
        )


class FileV1View(V1APIView):
    @extend_schema(
        summary="Delete a tenant-level file",
        description="Deletes a file uploaded with `POST /v1/files`, its extracted text and its stored bytes, "
        "and answers it as it was; later requests can no longer attach it.\n\nErrors: 404 for a file that "
        "is not one of the tenant's tenant-level files.",
        examples=[OpenApiExample("The deleted file", value={"success": True, "file": _V1_FILE}, response_only=True)],
        responses={
            200: inline_serializer("V1FileDeleted", {"success": serializers.BooleanField(), "file": FileSerializer()}),
        },
    )
    def delete(self, request, file_ref: str):
        file = file_get(tenant=request.tenant, conversation=None, file_ref=file_ref)
        body = FileSerializer(file).data
        file_delete(file=file)
        return Response({"success": True, "file": body})
