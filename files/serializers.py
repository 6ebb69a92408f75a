from django.conf import settings
from rest_framework import serializers

from files.models import File


class FileSerializer(serializers.ModelSerializer):
    file_ref = serializers.CharField(source="id", help_text="The file's reference (`file_…`).")
    conversation_id = serializers.CharField(allow_null=True)
    message_id = serializers.CharField(allow_null=True, help_text="The reply that produced it (`origin` agent).")

    class Meta:
        model = File
        fields = [
            "file_ref",
            "conversation_id",
            "name",
            "content_type",
            "size",
            "sha256",
            "origin",
            "message_id",
            "page_count",
            "extraction_status",
            "extraction_error",
            "created_at",
        ]
        read_only_fields = fields


# Documents the multipart body; the files themselves are read by the streaming upload handler. (A comment, not
# a docstring: the OpenAPI document would show a docstring to users as the body's description.)
class FileUploadSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(),
        help_text="One or more files: repeat the `files` field. At most FILE_MAX_PER_REQUEST files (20 by "
        "default), each at most FILE_MAX_BYTES (50 MiB by default): 413 beyond.",
        min_length=1,
        max_length=settings.FILE_MAX_PER_REQUEST,  # enforced while the upload streams in (files.storage), 413
    )


class FileUploadResultSerializer(serializers.Serializer):
    items = FileSerializer(many=True)


class DownloadQuerySerializer(serializers.Serializer):
    file_ref = serializers.CharField(help_text="Reference of the file to download (`file_…`).")


class RelatedDocumentSerializer(serializers.Serializer):
    source_id = serializers.CharField(help_text="A file_ref, or an external source's identifier.")
    name = serializers.CharField()
    link = serializers.CharField(help_text="Where to get the source: the file's download URL, or the cited URL.")
    page = serializers.IntegerField(allow_null=True)
    citation_number = serializers.IntegerField(help_text="The source's first citation marker in the conversation.")
    snippet = serializers.CharField()
    relevance_score = serializers.FloatField(help_text="0.0 to 1.0.")
    updated_date = serializers.CharField(allow_null=True, help_text="`YYYY-MM-DD` (the file's upload date).")
    quality_score = serializers.FloatField(help_text="0.0 to 1.0.")
    content = serializers.JSONField(
        allow_null=True,
        help_text="The tool result that cited the source: a text, a JSON value, or a reference to an image or "
        "document file of the conversation; null for citations made before tool calls were kept.",
    )
    content_type = serializers.CharField(allow_null=True, help_text="`text`, `json`, `image` or `file` (or null).")


class CitationOfSourceSerializer(serializers.Serializer):
    message_id = serializers.CharField()
    number = serializers.IntegerField()
    page = serializers.IntegerField(allow_null=True)
    snippet = serializers.CharField()
    relevance_score = serializers.FloatField()
    quality_score = serializers.FloatField()


class PassageSerializer(serializers.Serializer):
    ordinal = serializers.IntegerField()
    page = serializers.IntegerField(allow_null=True)
    text = serializers.CharField()


class RelatedDocumentDetailSerializer(RelatedDocumentSerializer):
    citations = CitationOfSourceSerializer(many=True, help_text="Every citation of the source here.")
    passages = PassageSerializer(many=True, help_text="The file's first 100 passages of extracted text.")


class PreviewSerializer(serializers.Serializer):
    source_id = serializers.CharField()
    name = serializers.CharField()
    content_type = serializers.ChoiceField(choices=["text", "pdf", "image", "binary"])
    url = serializers.CharField(help_text="Signed download URL, valid for 15 minutes.")
    text = serializers.CharField(allow_null=True, help_text="The first 10,000 characters, for text files.")
    page_count = serializers.IntegerField(allow_null=True)
    size = serializers.IntegerField()
