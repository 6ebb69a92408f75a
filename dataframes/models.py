import re

from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower

from core.ids import PublicIdField
from core.models import TenantOwned

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)


def is_frame_name(value: str) -> bool:
    # fullmatch: Python's `$` would also accept a trailing newline.
    return bool(NAME_RE.fullmatch(value))


class DataFrame(TenantOwned):
    """A table the agent produced in a conversation; its rows live in storage as one Parquet file."""

    id = PublicIdField(prefix="df")
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="data_frames")
    name = models.CharField(max_length=64, validators=[RegexValidator(NAME_PATTERN)])
    storage_key = models.CharField(max_length=255, editable=False)
    row_count = models.PositiveBigIntegerField(default=0)
    schema = models.JSONField(default=list, blank=True, help_text='Columns: [{"name": ..., "dtype": ...}].')
    message = models.ForeignKey(
        "conversations.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="data_frames",
        help_text="The assistant message that produced it.",
    )

    class Meta:
        constraints = [
            # Case-insensitive, as DuckDB resolves table names: `Sales` would shadow `sales`.
            models.UniqueConstraint("conversation", Lower("name"), name="dataframe_name_once_per_conversation_ci"),
            models.CheckConstraint(condition=models.Q(name__regex=NAME_PATTERN), name="dataframe_name_is_identifier"),
        ]
        indexes = [
            models.Index(fields=["tenant", "conversation", "created_at", "id"], name="dataframe_conversation_order"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.row_count} x {len(self.schema)})"

    @property
    def column_names(self) -> list[str]:
        return [column["name"] for column in self.schema]
