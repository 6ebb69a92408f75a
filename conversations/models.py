from operator import attrgetter

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property

from core.ids import PublicIdField
from core.models import TenantOwned, TenantQuerySet


class TitleSource(models.TextChoices):
    USER = "user"
    PROPOSED = "proposed"


class Conversation(TenantOwned):
    id = PublicIdField(prefix="conv")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="conversations")
    name = models.CharField(max_length=200, blank=True)
    title_source = models.CharField(max_length=16, choices=TitleSource.choices, default=TitleSource.USER)
    user_id = models.CharField(
        max_length=255, blank=True, help_text="The application's end user: an opaque string of the client's."
    )
    metadata = models.JSONField(default=dict, blank=True)
    archived = models.BooleanField(default=False, help_text="Hidden from the default lists.")
    pinned = models.BooleanField(default=False, help_text="Listed first.")
    last_engine = models.CharField(max_length=16, blank=True, help_text="The engine of its latest reply.")
    last_model = models.CharField(max_length=200, blank=True, help_text="The model of its latest reply.")
    message_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now, help_text="Last activity; bumped by new messages.")
    current_message = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="Active branch tip."
    )
    title_vector = models.GeneratedField(
        expression=SearchVector("name", config="english"), output_field=SearchVectorField(), db_persist=True
    )

    class Meta:
        indexes = [
            # The lists: archived or not, pinned first, then by activity, a page at a time at any depth.
            models.Index(
                fields=["tenant", "agent", "archived", "-pinned", "-updated_at", "-id"], name="conv_agent_list"
            ),
            models.Index(fields=["tenant", "archived", "-pinned", "-updated_at", "-id"], name="conv_tenant_list"),
            models.Index(
                fields=["tenant", "user_id", "archived", "-pinned", "-updated_at", "-id"], name="conv_user_list"
            ),
            # `metadata[key]=value` filters: containment (@>), which this index answers.
            GinIndex(fields=["metadata"], opclasses=["jsonb_path_ops"], name="conversation_metadata"),
            GinIndex(fields=["title_vector"], name="conversation_title_search"),
        ]

    def __str__(self) -> str:
        return f"{self.name or '(untitled)'} ({self.id})"


class Role(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(models.TextChoices):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MessageQuerySet(TenantQuerySet):
    def for_display(self) -> "MessageQuerySet":
        """With what the API shows of each message, in a constant number of queries."""
        return self.select_related("feedback").prefetch_related("citations", "tool_calls")


class Message(TenantOwned):
    """A node of the conversation tree; `Conversation.current_message` is the tip of the active branch."""

    id = PublicIdField(prefix="msg")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    thinking = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.COMPLETED)
    error = models.TextField(blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    attachments = ArrayField(models.CharField(max_length=40), default=list, blank=True, help_text="File refs.")
    metadata = models.JSONField(default=dict, blank=True, help_text="The client's JSON object (user messages).")
    # An assistant message's producer, as it was when the reply started (empty for replies made before they
    # were recorded), and why it stopped: "stop", "length" (cut by the token limit), "" while running or failed.
    engine = models.CharField(max_length=16, blank=True)
    model = models.CharField(max_length=200, blank=True)
    finish_reason = models.CharField(max_length=16, blank=True)
    # A reply posted in the background with a `webhook_url`: the tenant's endpoint that gets its end too.
    webhook_endpoint_id = models.CharField(max_length=40, blank=True, editable=False)
    # The stream log kept with the message: one [seq, kind, start, end] entry per event, where start/end
    # index into `content` or `thinking` (or into `extra_events` for other kinds), so that any suffix of
    # the stream can be rebuilt exactly once the live log has expired.
    stream_index = models.JSONField(default=list, blank=True, editable=False)
    extra_events = models.JSONField(default=list, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Last sign of life of a running generation."
    )
    # The run that owns a running reply: a process that took over a dead one's reply gives it a new run,
    # and the writes of the run it replaced (a process that only looked dead) then change nothing.
    run_id = models.CharField(max_length=32, blank=True, editable=False)
    search_vector = models.GeneratedField(
        expression=SearchVector("content", config="english"), output_field=SearchVectorField(), db_persist=True
    )

    objects = MessageQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "conversation", "created_at", "id"], name="message_conversation_order"),
            # Search ranks only a tenant's newest matches; for a common word they are found with this index.
            models.Index(fields=["tenant", "-created_at", "-id"], name="message_tenant_recent"),
            GinIndex(fields=["search_vector"], name="message_search"),
        ]
        constraints = [
            # One generation at a time per conversation, enforced by the database across processes.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(status="in_progress"),
                name="one_generation_per_conversation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.id}"

    @cached_property
    def cited(self) -> list["Citation"]:
        """The citations the API shows, by number (for_display() prefetches them)."""
        return sorted(self.citations.all(), key=attrgetter("number"))

    @cached_property
    def calls(self) -> list["ToolCall"]:
        """The tool calls the API shows, in the order they were made (for_display() prefetches them)."""
        return sorted(self.tool_calls.all(), key=attrgetter("position"))


class Citation(TenantOwned):
    """A numbered source an assistant message cites: a File of the conversation, or an external URL."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="citations")
    number = models.PositiveIntegerField()
    source_id = models.CharField(max_length=200, help_text="A file_ref, or a URL's identifier.")
    source_name = models.CharField(max_length=255, blank=True)
    url = models.URLField(max_length=2000, blank=True)
    page = models.PositiveIntegerField(null=True, blank=True)
    snippet = models.TextField(blank=True)
    relevance_score = models.FloatField(default=0)
    quality_score = models.FloatField(default=0)
    tool_call_id = models.CharField(
        max_length=100, blank=True, help_text="The tool call whose result cited it (empty before tool calls were kept)."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "number"], name="citation_number_once")]
        indexes = [models.Index(fields=["tenant", "message"], name="citation_message")]

    def __str__(self) -> str:
        return f"[{self.number}] {self.source_name or self.source_id}"


class ToolCallStatus(models.TextChoices):
    RUNNING = "running"  # no result: the reply ended (cancelled, failed) during the call
    OK = "ok"
    ERROR = "error"


class ToolCall(TenantOwned):
    """A tool an engine called while writing an assistant message, and its result, as streamed
    (`tool_call` and `tool_result` events, stored with the reply's end)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="tool_calls")
    call_id = models.CharField(max_length=100, help_text="The engine's id of the call, unique within the reply.")
    position = models.PositiveIntegerField(help_text="Its order among the reply's calls.")
    name = models.CharField(max_length=100)
    arguments = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=ToolCallStatus.choices, default=ToolCallStatus.RUNNING)
    content = models.JSONField(null=True, blank=True, help_text="Text, a JSON value, or a file reference.")
    content_type = models.CharField(max_length=16, default="text")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "call_id"], name="tool_call_once")]
        indexes = [models.Index(fields=["tenant", "message", "position"], name="tool_call_message")]

    def __str__(self) -> str:
        return f"{self.name} ({self.call_id})"


class FeedbackCategory(models.TextChoices):
    INACCURATE = "inaccurate"
    INCOMPLETE = "incomplete"
    OFF_TOPIC = "off_topic"
    HARMFUL = "harmful"
    FORMATTING = "formatting"
    OTHER = "other"


class Feedback(TenantOwned):
    """A user's verdict on an assistant message; one per message, resubmitting replaces it."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="feedback")
    thumbs_up = models.BooleanField()
    category = models.CharField(max_length=32, choices=FeedbackCategory.choices, blank=True)
    comment = models.TextField(blank=True, max_length=2000)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "feedback"
        indexes = [
            models.Index(fields=["tenant", "category"], name="feedback_category"),
            models.Index(fields=["tenant", "-updated_at", "-id"], name="feedback_tenant_recent"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(thumbs_up=True) | ~models.Q(category=""), name="feedback_thumbs_down_has_category"
            ),
        ]

    def __str__(self) -> str:
        return f"{'+' if self.thumbs_up else '-'} {self.message_id}"


class QueuedTurnStatus(models.TextChoices):
    QUEUED = "queued"  # waits for the conversation's running reply (and the turns queued before it)
    STARTED = "started"  # its messages exist: `user_message_id`, `message_id`
    CANCELLED = "cancelled"  # taken out of the queue before it started
    FAILED = "failed"  # could not start when its time came (`error`: e.g. its parent was deleted meanwhile)


class QueuedTurn(TenantOwned):
    """A message posted with `if_busy: "enqueue"`: its turn starts when the conversation's running reply
    and the turns queued before it have ended, by whichever process sees that first."""

    id = PublicIdField(prefix="qt")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="queued_turns")
    request = models.JSONField(help_text="The post's turn: content, attachments, parent_id, regenerate, ...")
    status = models.CharField(max_length=16, choices=QueuedTurnStatus.choices, default=QueuedTurnStatus.QUEUED)
    user_message_id = models.CharField(max_length=40, blank=True)
    message_id = models.CharField(max_length=40, blank=True, help_text="Its reply, once started.")
    error = models.CharField(max_length=500, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "conversation", "created_at", "id"], name="queued_turn_order"),
            # The sweep's, across tenants: conversations with a turn waiting.
            models.Index(fields=["created_at"], condition=models.Q(status="queued"), name="queued_turn_waiting"),
        ]

    def __str__(self) -> str:
        return f"{self.status} {self.id}"
