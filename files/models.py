from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models

from core.ids import PublicIdField
from core.models import TenantOwned


class Origin(models.TextChoices):
    UPLOAD = "upload"
    AGENT = "agent"


class ExtractionStatus(models.TextChoices):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"


class File(TenantOwned):
    """A stored file; its `id` is the public `file_ref`. Bytes: `default_storage.open(file.storage_key)`."""

    id = PublicIdField(prefix="file")
    conversation = models.ForeignKey(
        "conversations.Conversation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="files",
        help_text="Empty for tenant-level files of the stateless /v1 API.",
    )
    name = models.CharField(max_length=255, help_text="Sanitised original name, for display only.")
    content_type = models.CharField(max_length=255, help_text="Sniffed from the bytes.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    storage_key = models.CharField(max_length=255, unique=True, editable=False, help_text="Generated, never a name.")
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.UPLOAD)
    message = models.ForeignKey(
        "conversations.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The reply that produced it (`origin` agent).",
    )
    page_count = models.PositiveIntegerField(null=True, blank=True)
    extraction_status = models.CharField(
        max_length=16, choices=ExtractionStatus.choices, default=ExtractionStatus.PENDING
    )
    extraction_error = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "conversation", "-created_at", "-id"], name="file_conversation_order"),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(size__gte=0), name="file_size_not_negative")]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class Passage(TenantOwned):
    """About 800 characters of a file's extracted text: the retrieval index."""

    file = models.ForeignKey(File, on_delete=models.CASCADE, related_name="passages")
    ordinal = models.PositiveIntegerField()
    page = models.PositiveIntegerField(null=True, blank=True, help_text="1-based page, for paged documents.")
    text = models.TextField()
    search_vector = models.GeneratedField(
        expression=SearchVector("text", config="english"), output_field=SearchVectorField(), db_persist=True
    )

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "file", "ordinal"], name="passage_file_order"),
            GinIndex(fields=["search_vector"], name="passage_search"),
        ]
        constraints = [models.UniqueConstraint(fields=["file", "ordinal"], name="passage_ordinal_once")]

    def __str__(self) -> str:
        return f"{self.file_id}#{self.ordinal}"
