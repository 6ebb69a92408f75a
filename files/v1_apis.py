"""Tenant-level files for the stateless API: `/v1/files` (upload, list) and `/v1/files/{file_ref}`."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from core.pagination import KeysetPagination
from core.schema import V1ErrorSerializer
from core.views import V1APIView
from files.apis import uploaded_files
from files.selectors import file_get, file_list
from files.serializers import FileSerializer, FileUploadSerializer
from files.services import file_create_many, file_delete

V1_FILES = inline_serializer("V1Files", {"success": serializers.BooleanField(), "files": FileSerializer(many=True)})


class FilesV1View(V1APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="List the tenant-level files (newest first)",
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
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: V1_FILES, 413: V1ErrorSerializer, 429: V1ErrorSerializer},
    )
    def post(self, request):
        files = file_create_many(tenant=request.tenant, conversation_id=None, uploads=uploaded_files(request))
        return Response(
            {"success": True, "files": FileSerializer(files, many=True).data}, status=status.HTTP_201_CREATED
        )


class FileV1View(V1APIView):
    @extend_schema(
        summary="Delete a tenant-level file",
        responses={
            200: inline_serializer("V1FileDeleted", {"success": serializers.BooleanField(), "file": FileSerializer()}),
        },
    )
    def delete(self, request, file_ref: str):
        file = file_get(tenant=request.tenant, conversation=None, file_ref=file_ref)
        body = FileSerializer(file).data
        file_delete(file=file)
        return Response({"success": True, "file": body})
