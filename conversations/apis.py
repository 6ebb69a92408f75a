import re

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import models
from django.http import Http404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from agents.engines import EngineFailure
from agents.selectors import agent_get
from agents.titles import title_propose
from conversations.search import conversation_search
from conversations.selectors import (
    ConversationFilters,
    conversation_aget,
    conversation_get,
    conversation_list,
    conversation_state_messages,
    message_first_question,
    message_get,
)
from conversations.serializers import (
    ConversationCreateSerializer,
    ConversationSerializer,
    ConversationStateSerializer,
    ConversationUpdateSerializer,
    FeedbackInputSerializer,
    FeedbackSerializer,
    SearchHitSerializer,
    TenantConversationSerializer,
    TitleSerializer,
)
from conversations.services import (
    conversation_create,
    conversation_update,
    feedback_submit,
)
from core.errors import EngineError, Invalid, NotFound
from core.pagination import decode_cursor, encode_cursor, keyset_pagination, parse_bool, parse_limit
from core.schema import ErrorSerializer

STATE_MESSAGES_DEFAULT = 100
SEARCH_CURSOR_FIELDS = [models.FloatField(), models.DateTimeField(), models.CharField()]

# What the OpenAPI document shows (ids as core.ids makes them); turns.apis shows the same messages.
AGENT_ID = "agt_01jngadm50r4vdt6e95f73xrq5"
CONVERSATION_ID = "conv_01jngak3y04wqfkxg2cnc1hw48"
CONVERSATION_EXAMPLE = {
    "id": CONVERSATION_ID,
    "name": "March invoices",
    "agent_id": AGENT_ID,
    "title_source": "user",
    "created_at": "2025-03-04T10:18:00.104527Z",
    "updated_at": "2025-03-04T10:30:07.913006Z",
    "message_count": 2,
    "user_id": "user-4821",
    "metadata": {"customer": "acme", "channel": "web"},
}
USER_MESSAGE_EXAMPLE = {
    "id": "msg_01jngb3k90bnqqxc7xgafdbnkk",
    "conversation_id": CONVERSATION_ID,
    "parent_id": None,
    "role": "user",
    "content": "What is the total of the March invoices?",
    "thinking": "",
    "status": "completed",
    "error": "",
    "input_tokens": 0,
    "output_tokens": 0,
    "attachments": ["file_01jngarkq08g41awjffpe1rcbc"],
    "metadata": {"client_message_id": "c-1042"},
    "engine": "",
    "model": "",
    "finish_reason": "",
    "citations": [],
    "tool_calls": [],
    "feedback": None,
    "created_at": "2025-03-04T10:30:00.271834Z",
    "completed_at": "2025-03-04T10:30:00.271834Z",
}
ASSISTANT_MESSAGE_EXAMPLE = {
    "id": "msg_01jngb9320er8x3d7fsjzd70va",
    "conversation_id": CONVERSATION_ID,
    "parent_id": "msg_01jngb3k90bnqqxc7xgafdbnkk",
    "role": "assistant",
    "content": "The March invoices total 48,250.00 EUR [1].",
    "thinking": "",
    "status": "completed",
    "error": "",
    "input_tokens": 1840,
    "output_tokens": 64,
    "attachments": [],
    "metadata": {},
    "engine": "openai",
    "model": "gpt-4o-mini",
    "finish_reason": "stop",
    "citations": [
        {
            "number": 1,
            "source_id": "file_01jngarkq08g41awjffpe1rcbc",
            "source_name": "invoices-2025-03.pdf",
            "url": "",
            "page": 2,
            "snippet": "Total for March 2025: 48,250.00 EUR",
            "relevance_score": 0.82,
            "quality_score": 0.9,
        }
    ],
    "tool_calls": [
        {
            "id": "call_8Zq3",
            "name": "search_files",
            "arguments": {"query": "March invoices total"},
            "status": "ok",
            "content": "[1] invoices-2025-03.pdf, page 2: Total for March 2025: 48,250.00 EUR",
            "content_type": "text",
        }
    ],
    "feedback": None,
    "created_at": "2025-03-04T10:30:00.271835Z",
    "completed_at": "2025-03-04T10:30:07.913006Z",
}
FEEDBACK_EXAMPLE = {
    "thumbs_up": False,
    "category": "inaccurate",
    "comment": "The total leaves out the credit note of March 28.",
    "created_at": "2025-03-04T10:31:12.550210Z",
    "updated_at": "2025-03-04T10:31:12.550210Z",
}
_CONVERSATION_RESPONSE = OpenApiExample("A conversation", value=CONVERSATION_EXAMPLE, response_only=True)
METADATA_FILTERS_MAX = 10
_METADATA_FILTER = re.compile(r"metadata\[(?P<key>[^\[\]]{1,100})\]")
FILTER_PARAMETERS = [
    OpenApiParameter(
        "user_id", str, description="Only the conversations of this end user (`user_id`; empty: those without one)."
    ),
    OpenApiParameter(
        "archived",
        bool,
        description="true: only the archived conversations; false: only the others (the lists' default; "
        "search finds both unless asked).",
    ),
    OpenApiParameter(
        "metadata",
        {"type": "object", "additionalProperties": {"type": "string", "maxLength": 500}, "maxProperties": 10},
        style="deepObject",
        explode=True,
        description="`metadata[key]=value`: only conversations whose metadata has that value at that key (a "
        "string, or the number or boolean the value spells); up to 10, all of them must match.",
    ),
]
_FILTERS_RULE = (
    "Pinned conversations come first. Archived ones are left out unless `archived=true`, which lists them "
    "instead. `user_id=` keeps an end user's conversations and each `metadata[key]=value` those whose "
    "metadata holds that value (all of them must match)"
)
_FILTER_ERRORS = (
    "an `archived` other than true or false, a `user_id` over 255 characters, a malformed or 11th "
    "`metadata[key]` filter"
)


def filters_of(request, *, archived_default: bool | None = False) -> ConversationFilters:
    """The `user_id=`, `metadata[key]=value` and `archived=` filters of a list or search request (400 when
    malformed). Lists show the conversations not archived unless asked; search finds both unless asked."""
    params = request.query_params
    user_id = params.get("user_id")
    if user_id is not None and len(user_id) > 255:
        raise Invalid("user_id: at most 255 characters.", details={"user_id": user_id[:50]})
    metadata = []
    for name in params:
        if not name.startswith("metadata"):
            continue
        match = _METADATA_FILTER.fullmatch(name)
        if match is None:
            raise Invalid(f"{name}: metadata filters are written metadata[key]=value.", details={"parameter": name})
        for value in params.getlist(name):
            if len(value) > 500:
                raise Invalid(f"{name}: at most 500 characters.", details={"parameter": name})
            metadata.append((match["key"], value))
    if len(metadata) > METADATA_FILTERS_MAX:
        raise Invalid(f"metadata: at most {METADATA_FILTERS_MAX} filters.", details={"count": len(metadata)})
    archived = parse_bool(params.get("archived"), default=archived_default, name="archived")
    return ConversationFilters(user_id=user_id, metadata=tuple(metadata), archived=archived)


_METADATA_RULE = "`metadata` is a JSON object of yours (at most 16 KiB as JSON), returned as given"
_NAME_RULE = "`name` (or its alias `title`, the seeds' word; not both) takes 1 to 200 characters"
_BODY_RULE = (
    "Strings are JSON strings, and no string may hold a NUL character. Any other field is refused (400 naming it)."
)


@extend_schema_view(
    list=extend_schema(
        summary="List the agent's conversations, newest activity first",
        description="The agent's conversations, the most recently active first (`updated_at`: a new message "
        "bumps it), a page at a time: `limit` (1 to 100, default 20) and the `next` cursor of the previous "
        f"page. {_FILTERS_RULE}.\n\nErrors: 400 for a `limit` out of range, a malformed `next` cursor, "
        f"{_FILTER_ERRORS}; 404 for an agent that is not the tenant's.",
        parameters=FILTER_PARAMETERS,
        examples=[_CONVERSATION_RESPONSE],
    ),
    create=extend_schema(
        summary="Create a conversation",
        description=f"Creates an empty conversation of the agent. {_NAME_RULE}; without one, the conversation "
        "is titled from its first question when its first reply ends (`title_source: proposed`). "
        f"{_METADATA_RULE}. {_BODY_RULE}\n\nErrors: 400 for an invalid `name` or `metadata` (not an object, "
        "or too large) or an unknown field; 404 for an agent that is not the tenant's.",
        request=ConversationCreateSerializer,
        responses={201: ConversationSerializer},
        examples=[
            OpenApiExample(
                "Named with metadata",
                value={
                    "name": "March invoices",
                    "user_id": "user-4821",
                    "metadata": {"customer": "acme", "channel": "web"},
                },
                request_only=True,
            ),
            OpenApiExample("Titled from its first question", value={}, request_only=True),
            _CONVERSATION_RESPONSE,
        ],
    ),
    retrieve=extend_schema(
        summary="Get the conversation state: its newest messages as a tree and the current message",
        description="The conversation with its newest messages (`messages_limit` of them, 1 to 1000, default "
        "100) as a map from id to message, each with the ids of its `children`: every branch of the tree can "
        "be drawn from it. `current_message_id` is the tip of the active branch (the one a new message "
        "follows); `messages_truncated` is true when older messages were left out (all of them are listed by "
        "`GET .../messages?branch=all`).\n\nErrors: 400 for a `messages_limit` that is not an integer from 1 "
        "to 1000; 404 for a conversation that is not the tenant's under this agent.",
        parameters=[
            OpenApiParameter(
                "messages_limit",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": settings.CONVERSATION_MESSAGES_LIMIT_MAX,
                    "default": STATE_MESSAGES_DEFAULT,
                },
                description=f"Newest messages to include (1 to {settings.CONVERSATION_MESSAGES_LIMIT_MAX}, "
                f"default {STATE_MESSAGES_DEFAULT}).",
            )
        ],
        responses=ConversationStateSerializer,
        examples=[
            OpenApiExample(
                "A question and its reply",
                value={
                    **CONVERSATION_EXAMPLE,
                    "current_message_id": ASSISTANT_MESSAGE_EXAMPLE["id"],
                    "messages": {
                        USER_MESSAGE_EXAMPLE["id"]: {
                            **USER_MESSAGE_EXAMPLE,
                            "children": [ASSISTANT_MESSAGE_EXAMPLE["id"]],
                        },
                        ASSISTANT_MESSAGE_EXAMPLE["id"]: {**ASSISTANT_MESSAGE_EXAMPLE, "children": []},
                    },
                    "messages_truncated": False,
                    "can_continue": False,
                },
                response_only=True,
            )
        ],
    ),
    partial_update=extend_schema(
        summary="Rename a conversation or set its metadata",
        description=f"Renames the conversation ({_NAME_RULE}; a proposed title never replaces it afterwards) "
        f"and/or replaces its `metadata` whole ({_METADATA_RULE}). It bumps `updated_at`. {_BODY_RULE}\n\n"
        "Errors: 400 for an invalid `name` or `metadata` (not an object, or too large) or an unknown field; 404 "
        "for a conversation that is not the tenant's under this agent (or was deleted meanwhile).",
        request=ConversationUpdateSerializer,
        responses=ConversationSerializer,
        examples=[
            OpenApiExample("Rename", value={"name": "March invoices (final)"}, request_only=True),
            OpenApiExample("Rename, with the alias", value={"title": "March invoices (final)"}, request_only=True),
            OpenApiExample("Replace the metadata", value={"metadata": {"customer": "acme"}}, request_only=True),
            _CONVERSATION_RESPONSE,
        ],
    ),
)
class ConversationViewSet(viewsets.GenericViewSet):
    serializer_class = ConversationSerializer
    pagination_class = keyset_pagination("-pinned", "-updated_at", "-id")

    def list(self, request, tenant_id, agent_id):
        agent = agent_get(tenant=request.tenant, agent_id=agent_id)
        conversations = conversation_list(tenant=request.tenant, agent=agent, filters=filters_of(request))
        page = self.paginate_queryset(conversations)
        return self.get_paginated_response(ConversationSerializer(page, many=True).data)

    def create(self, request, tenant_id, agent_id):
        agent = agent_get(tenant=request.tenant, agent_id=agent_id)
        serializer = ConversationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_create(agent=agent, **serializer.validated_data)
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, tenant_id, agent_id, conversation_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        limit = parse_limit(
            request.query_params.get("messages_limit"),
            default=STATE_MESSAGES_DEFAULT,
            maximum=settings.CONVERSATION_MESSAGES_LIMIT_MAX,
            name="messages_limit",
        )
        messages, truncated = conversation_state_messages(conversation=conversation, limit=limit)
        context = {"messages": messages, "messages_truncated": truncated}
        return Response(ConversationStateSerializer(conversation, context=context).data)

    def partial_update(self, request, tenant_id, agent_id, conversation_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        serializer = ConversationUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_update(conversation=conversation, data=serializer.validated_data)
        return Response(ConversationSerializer(conversation).data)


@extend_schema_view(
    list=extend_schema(
        summary="List all the tenant's conversations across agents, newest activity first",
        description="Every conversation of the tenant, whatever its agent, the most recently active first, "
        "each with the `engine` and `model` of its latest reply (empty before the first); `agent_id` keeps one "
        "agent's. A page at a time: `limit` "
        f"(1 to 100, default 20) and the `next` cursor of the previous page. {_FILTERS_RULE}.\n\nErrors: 400 "
        f"for a `limit` out of range, a malformed `next` cursor, {_FILTER_ERRORS}; 404 for an `agent_id` that "
        "is not the tenant's.",
        parameters=[
            OpenApiParameter("agent_id", str, description="Only this agent's conversations."),
            *FILTER_PARAMETERS,
        ],
        examples=[
            OpenApiExample(
                "A conversation",
                value={**CONVERSATION_EXAMPLE, "model": "gpt-4o-mini", "engine": "openai"},
                response_only=True,
            )
        ],
    ),
)
class TenantConversationViewSet(viewsets.GenericViewSet):
    serializer_class = TenantConversationSerializer
    pagination_class = keyset_pagination("-pinned", "-updated_at", "-id")

    def list(self, request, tenant_id):
        agent_id = request.query_params.get("agent_id")
        agent = agent_get(tenant=request.tenant, agent_id=agent_id) if agent_id else None
        queryset = conversation_list(tenant=request.tenant, agent=agent, filters=filters_of(request))
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(TenantConversationSerializer(page, many=True).data)

    @extend_schema(
        summary="Search titles and message content (quoted phrases, -exclusions); ranked, with highlights",
        description="Full-text search (English stemming) of the tenant's conversations: their titles and "
        'their messages\' content. `q` takes web-search syntax: words (all must match), "quoted phrases", '
        "`or`, and `-word` to exclude; only its first 1,000 characters count, and a query of stop words only "
        "finds nothing. Conversations come best match first (a title match counts double), then most recent, "
        "each with up to two `highlights`: fragments with the matches in `<mark>` and the rest HTML-escaped "
        "(`highlights=false` leaves them out, faster). For a very common word only the tenant's 500 newest "
        "matching messages are ranked (titles always are). A page at a time: `limit` (1 to 100, default 20) "
        "and the `next` cursor of the previous page. `user_id=` and `metadata[key]=value` narrow the hits as on "
        "lists.\n\nErrors: 400 for a missing or blank `q`, a `limit` out of range, a malformed `next` cursor, a "
        f"`highlights` other than true or false, {_FILTER_ERRORS}; 404 for an `agent_id` that is not the "
        "tenant's.",
        parameters=[
            OpenApiParameter(
                "q",
                {"type": "string", "minLength": 1},
                required=True,
                description="Search words, web-search syntax; not blank.",
            ),
            OpenApiParameter("agent_id", str, description="Only this agent's conversations."),
            *FILTER_PARAMETERS,
            OpenApiParameter("highlights", bool, description="Compute highlights (default true)."),
        ],
        responses=SearchHitSerializer(many=True),
        examples=[
            OpenApiExample(
                "A hit",
                value={
                    "id": CONVERSATION_ID,
                    "title": "March invoices",
                    "updated_at": "2025-03-04T10:30:07.913006Z",
                    "agent_id": AGENT_ID,
                    "highlights": [
                        "<mark>March</mark> <mark>invoices</mark>",
                        "The <mark>March</mark> <mark>invoices</mark> total 48,250.00 EUR [1].",
                    ],
                },
                response_only=True,
            ),
            OpenApiExample("A phrase and an exclusion", value='"credit note" -draft', parameter_only=("q", "query")),
        ],
    )
    def search(self, request, tenant_id):
        q = request.query_params.get("q", "").strip()
        if not q:
            raise Invalid("q: a search query is required.", details={"q": q})
        agent_id = request.query_params.get("agent_id")
        if agent_id:
            agent_get(tenant=request.tenant, agent_id=agent_id)
        limit = parse_limit(request.query_params.get("limit"))
        cursor = request.query_params.get("next")
        after = decode_cursor(cursor, SEARCH_CURSOR_FIELDS) if cursor else None
        hits = conversation_search(
            tenant=request.tenant,
            q=q,
            limit=limit,
            after=after,
            agent_id=agent_id,
            highlights=parse_bool(request.query_params.get("highlights"), default=True, name="highlights"),
            conversation_filters=filters_of(request, archived_default=None),
        )
        next_cursor = None
        if len(hits) > limit:
            hits = hits[:limit]
            next_cursor = encode_cursor([hits[-1].rank, hits[-1].updated_at, hits[-1].id])
        return Response({"items": SearchHitSerializer(hits, many=True).data, "next": next_cursor})


_FEEDBACK_RESPONSE = OpenApiExample("Feedback", value=FEEDBACK_EXAMPLE, response_only=True)


class FeedbackViewSet(viewsets.GenericViewSet):
    serializer_class = FeedbackSerializer

    def _message(self, request, agent_id, conversation_id, message_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        return message_get(conversation=conversation, message_id=message_id)

    def get_object(self):
        """The message's feedback, for DRF's OPTIONS metadata (which asks for it to describe PUT): Http404,
        which it expects, when there is none yet."""
        kwargs = {name: self.kwargs[name] for name in ("agent_id", "conversation_id", "message_id")}
        feedback = getattr(self._message(self.request, **kwargs), "feedback", None)
        if feedback is None:
            raise Http404
        return feedback

    @extend_schema(
        summary="Read the feedback on a message",
        description="The feedback given on the message: `thumbs_up`, its `category` and `comment`.\n\n"
        "Errors: 404 for a message that is not of this conversation of the tenant, or that has no feedback.",
        examples=[_FEEDBACK_RESPONSE],
    )
    def retrieve(self, request, tenant_id, agent_id, conversation_id, message_id):
        message = self._message(request, agent_id, conversation_id, message_id)
        feedback = getattr(message, "feedback", None)
        if feedback is None:
            raise NotFound("This message has no feedback.")
        return Response(FeedbackSerializer(feedback).data)

    @extend_schema(
        summary="Give (or replace) feedback on an assistant message",
        description="Records the user's verdict on an assistant message, replacing any earlier one: "
        "`thumbs_up`, a `category` (required when `thumbs_up` is false: `inaccurate`, `incomplete`, "
        "`off_topic`, `harmful`, `formatting` or `other`) and a `comment` of up to 2,000 characters. "
        f"{_BODY_RULE} The feedback shows in the message's `feedback` when messages are read.\n\n"
        "Errors: 400 for a user message, a missing `category` with a thumbs down, or an invalid field; 404 for "
        "a message that is not of this conversation of the tenant.",
        request=FeedbackInputSerializer,
        responses=FeedbackSerializer,
        examples=[
            OpenApiExample(
                "A thumbs down",
                value={"thumbs_up": False, "category": "inaccurate", "comment": FEEDBACK_EXAMPLE["comment"]},
                request_only=True,
            ),
            OpenApiExample("A thumbs up", value={"thumbs_up": True}, request_only=True),
            _FEEDBACK_RESPONSE,
        ],
    )
    def update(self, request, tenant_id, agent_id, conversation_id, message_id):
        message = self._message(request, agent_id, conversation_id, message_id)
        serializer = FeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        feedback = feedback_submit(message=message, **serializer.validated_data)
        return Response(FeedbackSerializer(feedback).data)

    @extend_schema(
        summary="Remove the feedback on a message",
        description="Deletes the message's feedback; the answer has no body.\n\nErrors: 404 for a message "
        "that is not of this conversation of the tenant, or that has no feedback.",
        responses={204: None},
        examples=[
            OpenApiExample(
                "An assistant message", value=ASSISTANT_MESSAGE_EXAMPLE["id"], parameter_only=("message_id", "path")
            )
        ],
    )
    def destroy(self, request, tenant_id, agent_id, conversation_id, message_id):
        message = self._message(request, agent_id, conversation_id, message_id)
        if getattr(message, "feedback", None) is None:
            raise NotFound("This message has no feedback.")
        message.feedback.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class TitleView(AsyncAPIView):
    @extend_schema(
        summary="Propose a title from the conversation (not saved)",
        description="A title for the conversation, proposed from its first question the way its agent titles "
        "an untitled conversation: the builtin engine takes the question's key words, the `openai` engine asks "
        "the model. At most 80 characters. Nothing is saved: `PATCH` the conversation's `name` to keep it. No "
        "request body.\n\nErrors: 400 for a conversation without a message yet; 404 for a conversation that is "
        "not the tenant's under this agent; 502 when the model could not be reached.",
        request=None,
        responses={200: TitleSerializer, 502: ErrorSerializer},
        examples=[OpenApiExample("A title", value={"title": "Total March invoices"}, response_only=True)],
    )
    async def post(self, request, tenant_id: str, agent_id: str, conversation_id: str):
        conversation = await conversation_aget(
            tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id
        )
        first = await sync_to_async(message_first_question)(conversation=conversation)
        if first is None:
            raise Invalid("The conversation has no message to propose a title from.")
        try:
            title = await title_propose(agent=conversation.agent, first_message=first.content)
        except EngineFailure as exc:
            raise EngineError(str(exc)) from exc
        return Response({"title": title})
