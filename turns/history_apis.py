"""Editing a conversation's history: a user message edited (a new branch, as edit-and-resend makes, or in
place while it has no reply), a message deleted with everything under it, and messages added as they are,
without running the agent (to seed a conversation, as OpenAI's Conversations items allow)."""

from __future__ import annotations

import asyncio
import functools

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from conversations.models import Message, Role
from conversations.selectors import conversation_aget, message_get
from conversations.serializers import MessageSerializer, MetadataField, validate_metadata
from conversations.services import MESSAGES_APPEND_MAX, message_content_replace, message_subtree_delete, messages_append
from core.drain import draining
from core.errors import Invalid, Unavailable
from core.fields import StrictBooleanField, StrictCharField
from core.idempotency import HEADER as IDEMPOTENCY_HEADER
from core.idempotency import request_fingerprint, run_idempotent
from core.schema import ErrorSerializer
from core.serializers import InputSerializer
from turns.apis import _ID_PARAMS, _IDEMPOTENCY_PARAM, _TURN_RESPONSE, _post_and_wait
from turns.runtime import ROOT, ConversationRef, TurnRequest
from turns.serializers import TurnResponseSerializer

_MESSAGE_PARAM = OpenApiParameter("message_id", str, OpenApiParameter.PATH)


class MessageEditSerializer(InputSerializer):
    content = StrictCharField(
        max_length=settings.MESSAGE_MAX_CHARS, trim_whitespace=False, help_text="The question as it should be."
    )
    in_place = StrictBooleanField(
        required=False,
        default=False,
        help_text="Change the message itself, which must have no reply yet; the agent does not run.",
    )

    def validate_content(self, content: str) -> str:
        if not content.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return content


class MessageDeletedSerializer(serializers.Serializer):
    deleted = serializers.IntegerField(help_text="How many messages: the message and those under it.")
    current_message_id = serializers.CharField(allow_null=True, help_text="The active branch's tip now.")


class AppendedMessageSerializer(InputSerializer):
    role = serializers.ChoiceField(choices=Role.choices)
    content = StrictCharField(max_length=settings.MESSAGE_MAX_CHARS, trim_whitespace=False)
    metadata = MetadataField(required=False, validators=[validate_metadata], help_text="A JSON object of yours.")

    def validate_content(self, content: str) -> str:
        if not content.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return content


class MessagesAppendSerializer(InputSerializer):
    messages = serializers.ListField(
        child=AppendedMessageSerializer(), min_length=1, max_length=MESSAGES_APPEND_MAX, help_text="Oldest first."
    )
    parent_id = StrictCharField(
        required=False, max_length=40, help_text='After this message (default: the current one; "root": the top).'
    )


class MessagesAppendedSerializer(serializers.Serializer):
    messages = MessageSerializer(many=True)
    current_message_id = serializers.CharField()


class MessageView(AsyncAPIView):
    @extend_schema(
        summary="Edit a user message: a new branch (the agent answers it), or in place before any reply",
        description=(
            "By default, as edit-and-resend does: the edited question becomes a new message beside the old one "
            "(same parent, the same attachments and metadata), the agent answers it, and the answer is that of "
            "a post-and-wait (the conversation, the new question and its reply; the old branch stays, reachable "
            'by its ids). With `"in_place": true` the message itself changes and nothing runs, only while it '
            "has no reply; the answer is then the message. `content` takes up to 100,000 characters, not blank; "
            "any other field is refused. An `Idempotency-Key` replays the first answer.\n\n"
            "Errors: 400 for a blank or missing `content`, an unknown field, an assistant message, or `in_place` "
            "for a message that has a reply; 404 for a message that is not of this conversation of the tenant; "
            "409 while a reply runs in the conversation; 502 when the engine fails (the reply is stored "
            "`failed`)."
        ),
        parameters=[*_ID_PARAMS, _MESSAGE_PARAM, _IDEMPOTENCY_PARAM],
        request=MessageEditSerializer,
        responses={
            200: PolymorphicProxySerializer(
                component_name="MessageEdited",
                serializers=[TurnResponseSerializer, MessageSerializer],
                resource_type_field_name=None,
                many=False,
            ),
            502: ErrorSerializer,
        },
        examples=[
            OpenApiExample("Edit and resend", value={"content": "And for April?"}, request_only=True),
            OpenApiExample("Fix a typo", value={"content": "And for April?", "in_place": True}, request_only=True),
            _TURN_RESPONSE,
        ],
    )
    async def patch(self, request, tenant_id: str, agent_id: str, conversation_id: str, message_id: str):
        serializer = MessageEditSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        edit = serializer.validated_data
        conversation = await conversation_aget(
            tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id
        )
        message = await sync_to_async(message_get)(conversation=conversation, message_id=message_id)
        ref = ConversationRef(tenant_id=request.tenant.id, agent_id=agent_id, conversation_id=conversation_id)
        if edit["in_place"]:
            run = functools.partial(_edit_in_place, conversation, message, edit["content"])
        else:
            if message.role != Role.USER:
                raise Invalid("message_id: only a user message is edited.", details={"message_id": message.id})
            if message.parent_id is not None and await _role_of(message.parent_id) != Role.ASSISTANT:
                raise Invalid(  # (a branch starts after a reply: seeded histories may have two questions in a row)
                    "message_id: it follows another question, not a reply; edit it in place (before its reply).",
                    details={"message_id": message.id},
                )
            if draining():
                raise Unavailable
            turn_request = TurnRequest(
                content=edit["content"],
                attachments=list(message.attachments),
                parent_id=message.parent_id or ROOT,
                metadata=message.metadata,
            )
            launched = asyncio.get_running_loop().create_future()
            # (The client going away leaves the reply running, as after a post.)
            run = functools.partial(_post_and_wait, ref, turn_request, launched=launched)
        status, body = await run_idempotent(
            tenant_id=request.tenant.id,
            key=request.headers.get(IDEMPOTENCY_HEADER),
            fingerprint=request_fingerprint("PATCH", request.path, request.data),
            run=run,
        )
        return Response(body, status=status)

    @extend_schema(
        summary="Delete a message and everything under it",
        description="Deletes the message and every message under it in the tree (their citations, tool calls "
        "and feedback; files the agent produced stay the conversation's). If the current message was among "
        "them, the message's parent becomes the current one. No request body.\n\nErrors: 404 for a message "
        "that is not of this conversation of the tenant; 409 while a reply among them is generated (cancel it "
        "first).",
        parameters=[*_ID_PARAMS, _MESSAGE_PARAM],
        request=None,
        responses={200: MessageDeletedSerializer},
        examples=[
            OpenApiExample(
                "A question and its reply",
                value={"deleted": 2, "current_message_id": "msg_01jngb9320er8x3d7fsjzd70va"},
                response_only=True,
            )
        ],
    )
    async def delete(self, request, tenant_id: str, agent_id: str, conversation_id: str, message_id: str):
        conversation = await conversation_aget(
            tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id
        )
        message = await sync_to_async(message_get)(conversation=conversation, message_id=message_id)
        deleted, current = await sync_to_async(message_subtree_delete)(conversation=conversation, message=message)
        return Response(MessageDeletedSerializer({"deleted": deleted, "current_message_id": current}).data)


async def _role_of(message_id: str) -> str | None:
    return await Message.objects.filter(pk=message_id).values_list("role", flat=True).afirst()


async def _edit_in_place(conversation, message, content: str) -> tuple[int, dict]:
    edited = await sync_to_async(message_content_replace)(conversation=conversation, message=message, content=content)
    return 200, await sync_to_async(lambda: MessageSerializer(edited).data)()


class MessagesAppendView(AsyncAPIView):
    @extend_schema(
        summary="Add messages as they are, without running the agent",
        description="Seeds or extends a conversation with messages from elsewhere (a history to continue, a "
        "transcript): a chain after `parent_id` (default: the current message; `root`: a new tree), oldest "
        "first, stored `completed`; the last becomes the current message and the agent answers what comes "
        "next. 1 to 100 messages, each a `role` (`user` or `assistant`), a `content` (up to 100,000 characters, "
        "not blank) and optional `metadata`; any other field is refused.\n\nErrors: 400 for an invalid "
        "message (the message names it, e.g. `messages[2].role`), an unknown field, or a `parent_id` that is "
        "not of this conversation; 404 for a conversation that is not the tenant's under this agent; 409 while "
        "a reply is generated in it.",
        parameters=_ID_PARAMS,
        request=MessagesAppendSerializer,
        responses={201: MessagesAppendedSerializer},
        examples=[
            OpenApiExample(
                "A history to continue",
                value={
                    "messages": [
                        {"role": "user", "content": "Our refund policy?"},
                        {"role": "assistant", "content": "Refunds within 30 days, with the receipt."},
                    ]
                },
                request_only=True,
            )
        ],
    )
    async def post(self, request, tenant_id: str, agent_id: str, conversation_id: str):
        serializer = MessagesAppendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = await conversation_aget(
            tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id
        )
        rows = await sync_to_async(messages_append)(
            conversation=conversation,
            messages=serializer.validated_data["messages"],
            parent_id=serializer.validated_data.get("parent_id"),
        )
        for row in rows:
            row.cited = row.calls = []  # (new rows: nothing to prefetch)
        body = await sync_to_async(
            lambda: MessagesAppendedSerializer({"messages": rows, "current_message_id": rows[-1].id}).data
        )()
        return Response(body, status=201)
