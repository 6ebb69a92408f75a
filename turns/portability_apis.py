"""Fork, export and import of a conversation (turns.portability does the work)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from adrf.views import APIView as AsyncAPIView
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.selectors import agent_get
from conversations.apis import (
    AGENT_ID,
    ASSISTANT_MESSAGE_EXAMPLE,
    CONVERSATION_EXAMPLE,
    STATE_MESSAGES_DEFAULT,
    USER_MESSAGE_EXAMPLE,
)
from conversations.models import Conversation, Message, MessageStatus, Role
from conversations.selectors import conversation_get, conversation_state_messages
from conversations.serializers import ConversationStateSerializer
from core.db import in_worker
from core.errors import Invalid, PayloadTooLarge
from core.fields import StrictCharField
from core.idempotency import HEADER as IDEMPOTENCY_HEADER
from core.idempotency import request_fingerprint, run_idempotent
from core.pagination import parse_bool
from core.parsers import LargeJSONParser
from core.schema import ErrorSerializer
from core.serializers import InputSerializer
from tenants.models import Tenant
from turns.apis import _ID_PARAMS, _IDEMPOTENCY_PARAM
from turns.portability import (
    DOCUMENT_FORMAT,
    DOCUMENT_VERSION,
    active_branch,
    conversation_document,
    conversation_fork,
    conversation_import,
    document_bytes_read,
)
from turns.serializers import ConversationDocumentSerializer

_STATE_EXAMPLE = {
    **CONVERSATION_EXAMPLE,
    "id": "conv_01jnh0m1t5xq8b2ws7ye4kz9cd",
    "updated_at": "2025-03-05T08:02:11.530217Z",
    "archived": False,
    "pinned": False,
    "current_message_id": "msg_01jnh0m1t6a3v9q2bb7c8d4e5f",
    "messages": {},
    "messages_truncated": False,
    "can_continue": False,
}
_DOCUMENT_MESSAGES = [
    {key: value for key, value in message.items() if key != "conversation_id"}
    for message in (USER_MESSAGE_EXAMPLE, ASSISTANT_MESSAGE_EXAMPLE)
]
_DOCUMENT_MESSAGES[1]["citations"] = [{**_DOCUMENT_MESSAGES[1]["citations"][0], "tool_call_id": ""}]
_DOCUMENT_EXAMPLE = {
    "format": DOCUMENT_FORMAT,
    "version": DOCUMENT_VERSION,
    "exported_at": "2025-03-05T08:00:00.000000Z",
    "conversation": {
        **{key: CONVERSATION_EXAMPLE[key] for key in ("id", "agent_id", "name", "title_source", "user_id", "metadata")},
        "archived": False,
        "pinned": False,
        "created_at": CONVERSATION_EXAMPLE["created_at"],
        "updated_at": CONVERSATION_EXAMPLE["updated_at"],
        "current_message_id": ASSISTANT_MESSAGE_EXAMPLE["id"],
    },
    "messages": _DOCUMENT_MESSAGES,
    "files": [
        {
            "id": "file_01jngarkq08g41awjffpe1rcbc",
            "name": "invoices-2025-03.txt",
            "content_type": "text/plain",
            "size": 35,
            "sha256": "b86550e4e1d86b1faa2c3c6c8c7d7d14763c95494aa208a862c3fcea7cc55bd7",
            "origin": "upload",
            "message_id": None,
            "page_count": None,
            "created_at": "2025-03-04T10:20:41.120331Z",
            "content_base64": "VG90YWwgZm9yIE1hcmNoIDIwMjU6IDQ4LDI1MC4wMCBFVVI=",
        }
    ],
    "data_frames": [],
}


def _created(tenant: Tenant, conversation: Conversation) -> tuple[int, dict[str, Any]]:
    """201 with the new conversation as its GET shows it."""
    conversation = conversation_get(tenant=tenant, agent_id=conversation.agent_id, conversation_id=conversation.id)
    messages, truncated = conversation_state_messages(conversation=conversation, limit=STATE_MESSAGES_DEFAULT)
    context = {"messages": messages, "messages_truncated": truncated}
    return 201, ConversationStateSerializer(conversation, context=context).data


async def _once(request, work) -> Response:
    """`work(body)` (sync, validating the body) in a worker thread, once per Idempotency-Key. The body is
    parsed off the event loop too: an import's may take IMPORT_MAX_BYTES."""
    body = await asyncio.to_thread(lambda: request.data)
    status, answer = await run_idempotent(
        tenant_id=request.tenant.id,
        key=request.headers.get(IDEMPOTENCY_HEADER),
        fingerprint=await asyncio.to_thread(request_fingerprint, request.method, request.path, body),
        run=functools.partial(in_worker(work), body),
    )
    return Response(answer, status=status)


class ForkSerializer(InputSerializer):
    aliases = {"title": "name"}

    from_message_id = StrictCharField(
        max_length=40, required=False, help_text="The last message copied (default: the current message)."
    )
    agent_id = StrictCharField(
        max_length=40,
        required=False,
        help_text="The new conversation's agent, one of the tenant's (default: this one).",
    )
    name = StrictCharField(min_length=1, max_length=200, required=False, help_text="Default: the conversation's.")
    title = StrictCharField(min_length=1, max_length=200, required=False, help_text="An alias of `name`.")


class ConversationForkView(AsyncAPIView):
    @extend_schema(
        summary="Fork a conversation: a new one with its branch up to a message",
        description="Copies the branch from the first message to `from_message_id` (default: the current "
        "message) into a new conversation, under this agent or another of the tenant's (`agent_id`), with new "
        "ids: the messages (their times, citations and tool calls, not their feedback, which rated the "
        "original replies), and copies of the conversation's files and data frames that this branch made, "
        "attached or cited, and of those no reply made (uploads); references to them in the copy name the "
        "copies. The copies are "
        "independent: deleting either conversation leaves the other whole, and the files count toward the "
        "tenant's storage limit. `name` (or its alias `title`) names the fork; default: the conversation's "
        "name. Answers the new conversation as its GET does, with 201; an `Idempotency-Key` makes a retry "
        "answer the first fork.\n\nErrors: 400 for an unknown field or "
        "a `from_message_id` that is not a message of this conversation; 404 for a conversation that is not "
        "the tenant's under this agent, or an `agent_id` that is not the tenant's; 409 when `from_message_id` "
        "is a reply being generated, or a file's stored bytes are missing; "
        "413 when the copies would pass the tenant's storage limit; 422 for an "
        "`Idempotency-Key` used before with another body.",
        parameters=[*_ID_PARAMS, _IDEMPOTENCY_PARAM],
        request=ForkSerializer,
        responses={201: ConversationStateSerializer, 409: ErrorSerializer, 413: ErrorSerializer, 422: ErrorSerializer},
        examples=[
            OpenApiExample(
                "From an earlier reply, to another agent",
                value={"from_message_id": ASSISTANT_MESSAGE_EXAMPLE["id"], "agent_id": AGENT_ID},
                request_only=True,
            ),
            OpenApiExample("The fork", value=_STATE_EXAMPLE, response_only=True, status_codes=["201"]),
        ],
    )
    async def post(self, request, tenant_id: str, agent_id: str, conversation_id: str):
        return await _once(request, functools.partial(_fork, request.tenant, agent_id, conversation_id))


def _fork(tenant: Tenant, agent_id: str, conversation_id: str, body: Any) -> tuple[int, dict[str, Any]]:
    serializer = ForkSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    given = serializer.validated_data
    conversation = conversation_get(tenant=tenant, agent_id=agent_id, conversation_id=conversation_id)
    target = agent_get(tenant=tenant, agent_id=given["agent_id"]) if "agent_id" in given else conversation.agent
    tip_id = given.get("from_message_id", conversation.current_message_id)
    tip = Message.objects.filter(tenant_id=tenant.id, conversation=conversation, id=tip_id or "").first()
    if tip is None:
        raise Invalid(
            f"from_message_id: no message {tip_id!r} in this conversation."
            if tip_id
            else "from_message_id: the conversation has no message yet.",
            details={"from_message_id": tip_id},
        )
    return _created(tenant, conversation_fork(conversation=conversation, tip=tip, agent=target, name=given.get("name")))


class ConversationExportView(APIView):
    @extend_schema(
        summary="Export a conversation as a JSON document or as Markdown",
        description="`format=json` (the default): the whole conversation as one document that "
        "`POST .../conversations/import` takes back: the conversation's fields, every message of the tree "
        "(parents first, each with its citations, tool calls and feedback), and its files and data frames "
        "with their bytes in base64 (`content_base64`; Parquet for a data frame). With "
        "`include_bytes=false` the files and frames are references only (smaller, but not importable). "
        "`format=markdown`: the active branch as a readable transcript (text/markdown), each reply with its "
        "model, citations, tool calls and feedback.\n\nErrors: 400 for a `format` other than json or "
        "markdown or an `include_bytes` other than true or false; 404 for a conversation that is not the "
        "tenant's under this agent; 413 when the bytes would make a document larger than an import takes "
        "(IMPORT_MAX_BYTES): export with `include_bytes=false`.",
        parameters=[
            *_ID_PARAMS,
            OpenApiParameter("format", str, enum=["json", "markdown"], description="Default: json."),
            OpenApiParameter(
                "include_bytes", bool, description="The files' and frames' bytes, base64 (JSON only). Default: true."
            ),
        ],
        responses={
            (200, "application/json"): ConversationDocumentSerializer,
            (200, "text/markdown"): OpenApiResponse(OpenApiTypes.STR, description="`format=markdown`."),
            413: ErrorSerializer,
        },
        examples=[OpenApiExample("A question, its reply and a file", value=_DOCUMENT_EXAMPLE, response_only=True)],
    )
    def get(self, request, tenant_id: str, agent_id: str, conversation_id: str):
        output = request.query_params.get("format", "json")
        if output not in ("json", "markdown"):
            raise Invalid("format: json or markdown.", details={"format": output[:50]})
        include_bytes = parse_bool(request.query_params.get("include_bytes"), default=True, name="include_bytes")
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        document = conversation_document(conversation=conversation)
        if output == "markdown":
            response = HttpResponse(document_markdown(document), content_type="text/markdown; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{conversation.id}.md"'
            return response
        if include_bytes:
            document_bytes_read(document)
        body = JSONRenderer().render(ConversationDocumentSerializer(document).data)
        if include_bytes and len(body) > settings.IMPORT_MAX_BYTES:
            raise PayloadTooLarge(
                f"The document would be {len(body)} bytes, more than an import takes (IMPORT_MAX_BYTES, "
                f"{settings.IMPORT_MAX_BYTES} bytes). Export with include_bytes=false for the files' and frames' "
                "references only.",
                details={"limit": "IMPORT_MAX_BYTES", "max_bytes": settings.IMPORT_MAX_BYTES, "bytes": len(body)},
            )
        return HttpResponse(body, content_type="application/json")

    def perform_content_negotiation(self, request, force=False):
        # `format` decides what is answered, whatever the Accept header asks (text/markdown included).
        return super().perform_content_negotiation(request, force=True)


class ImportJSONParser(LargeJSONParser):
    max_bytes_setting = "IMPORT_MAX_BYTES"


class ConversationImportView(AsyncAPIView):
    parser_classes = [ImportJSONParser]

    @extend_schema(
        summary="Import a conversation from an export",
        description="Recreates a document of `GET .../export` (from this tenant, another one, or another "
        "deployment) as a new conversation of this agent, every message, file and data frame with a new id "
        "and references to them remapped: all of it or, on any error, nothing. Messages keep their times; a "
        "reply that was being generated is stored `cancelled`; the conversation's last activity is now. File "
        "types are sniffed from the bytes again and their `sha256` checked; a data frame's columns and rows "
        "are read from its Parquet. The document's `id` and `agent_id` of the conversation are ignored. Fields "
        "a document made by hand may leave out take their defaults (see the schema). The body may take "
        "IMPORT_MAX_BYTES (64 MiB by default). Answers the new conversation as its GET does, with 201; an "
        "`Idempotency-Key` makes a retry answer the first import instead of importing again.\n\n"
        "Errors: 400 for an invalid document, naming the field (an unknown field, an id used twice, a "
        "`parent_id` that is not an earlier message, more than 10,000 messages or 1,000 files or frames, a text "
        "over 400,000 characters, a file without its bytes, over FILE_MAX_BYTES or whose bytes do not have its "
        "sha256, an unreadable Parquet, two data frames of one name); 404 for an agent that is not the "
        "tenant's (once the document is valid); 413 for a body over IMPORT_MAX_BYTES or files beyond the "
        "tenant's storage limit; 422 for an `Idempotency-Key` used before with another body.",
        parameters=[OpenApiParameter("agent_id", OpenApiTypes.STR, OpenApiParameter.PATH), _IDEMPOTENCY_PARAM],
        request=ConversationDocumentSerializer,
        responses={201: ConversationStateSerializer, 413: ErrorSerializer, 422: ErrorSerializer},
        examples=[
            OpenApiExample("An export", value=_DOCUMENT_EXAMPLE, request_only=True),
            OpenApiExample("The imported conversation", value=_STATE_EXAMPLE, response_only=True, status_codes=["201"]),
        ],
    )
    async def post(self, request, tenant_id: str, agent_id: str):
        return await _once(request, functools.partial(_import, request.tenant, agent_id))


def _import(tenant: Tenant, agent_id: str, body: Any) -> tuple[int, dict[str, Any]]:
    serializer = ConversationDocumentSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    agent = agent_get(tenant=tenant, agent_id=agent_id)
    return _created(tenant, conversation_import(agent=agent, document=serializer.validated_data))


# --- Markdown -------------------------------------------------------------------------------------------


def document_markdown(document: dict[str, Any]) -> str:
    """The document's active branch as a transcript to read."""
    conversation = document["conversation"]
    files = {entry["id"]: entry["name"] for entry in document["files"]}
    branch = active_branch(document)
    lines = [
        f"# {conversation['name'] or 'Untitled conversation'}",
        "",
        f"Conversation `{conversation['id']}` of agent `{conversation['agent_id']}`, exported "
        f"{document['exported_at']:%Y-%m-%d %H:%M} UTC: its active branch, {len(branch)} messages.",
    ]
    for message in branch:
        producer = message["model"] or message["engine"]
        who = "User" if message["role"] == Role.USER else f"Assistant ({producer})" if producer else "Assistant"
        lines += ["", f"## {who} · {message['created_at']:%Y-%m-%d %H:%M}", ""]
        if message["status"] != MessageStatus.COMPLETED:
            lines += [f"*{message['status']}{': ' + message['error'] if message['error'] else ''}*", ""]
        if message["finish_reason"] == "length":
            lines += ["*(cut by its token limit)*", ""]
        lines.append(message["content"])
        if message["attachments"]:
            named = ", ".join(f"{files.get(ref, 'a removed file')} (`{ref}`)" for ref in message["attachments"])
            lines += ["", f"Attached: {named}"]
        for call in message["tool_calls"]:
            lines += ["", f"- Tool `{call['name']}`: {call['status']}"]
        if message["citations"]:
            lines.append("")
            for citation in message["citations"]:
                page = f", page {citation['page']}" if citation["page"] else ""
                where = f" <{citation['url']}>" if citation["url"] else f" (`{citation['source_id']}`)"
                lines.append(f"[{citation['number']}] {citation['source_name'] or citation['source_id']}{page}{where}")
        if feedback := message["feedback"]:
            verdict = "thumbs up" if feedback["thumbs_up"] else f"thumbs down ({feedback['category']})"
            lines += ["", f"Feedback: {verdict}{': ' + feedback['comment'] if feedback['comment'] else ''}"]
    return "\n".join(lines) + "\n"
