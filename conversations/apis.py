from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import models
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from agents.engines import EngineFailure
from agents.selectors import agent_get
from agents.titles import title_propose
from conversations.search import conversation_search
from conversations.selectors import (
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


@extend_schema_view(
    list=extend_schema(summary="List the agent's conversations, newest activity first"),
    create=extend_schema(
        summary="Create a conversation", request=ConversationCreateSerializer, responses={201: ConversationSerializer}
    ),
    retrieve=extend_schema(
        summary="Get the conversation state: its newest messages as a tree and the current message",
        parameters=[
            OpenApiParameter("messages_limit", int, description="Newest messages to include (1 to 1000, default 100).")
        ],
        responses=ConversationStateSerializer,
    ),
    partial_update=extend_schema(
        summary="Rename a conversation or set its metadata", request=ConversationUpdateSerializer
    ),
)
class ConversationViewSet(viewsets.GenericViewSet):
    serializer_class = ConversationSerializer
    pagination_class = keyset_pagination("-updated_at", "-id")

    def list(self, request, tenant_id, agent_id):
        agent = agent_get(tenant=request.tenant, agent_id=agent_id)
        page = self.paginate_queryset(conversation_list(tenant=request.tenant, agent=agent))
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
        parameters=[OpenApiParameter("agent_id", str, description="Only this agent's conversations.")],
    ),
)
class TenantConversationViewSet(viewsets.GenericViewSet):
    serializer_class = TenantConversationSerializer
    pagination_class = keyset_pagination("-updated_at", "-id")

    def list(self, request, tenant_id):
        agent_id = request.query_params.get("agent_id")
        agent = agent_get(tenant=request.tenant, agent_id=agent_id) if agent_id else None
        queryset = conversation_list(tenant=request.tenant, agent=agent).select_related("agent")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(TenantConversationSerializer(page, many=True).data)

    @extend_schema(
        summary="Search titles and message content (quoted phrases, -exclusions); ranked, with highlights",
        parameters=[
            OpenApiParameter("q", str, required=True, description="Search words, websearch syntax."),
            OpenApiParameter("agent_id", str, description="Only this agent's conversations."),
            OpenApiParameter("highlights", bool, description="Compute highlights (default true)."),
        ],
        responses=SearchHitSerializer(many=True),
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
        )
        next_cursor = None
        if len(hits) > limit:
            hits = hits[:limit]
            next_cursor = encode_cursor([hits[-1].rank, hits[-1].updated_at, hits[-1].id])
        return Response({"items": SearchHitSerializer(hits, many=True).data, "next": next_cursor})


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

    @extend_schema(summary="Read the feedback on a message")
    def retrieve(self, request, tenant_id, agent_id, conversation_id, message_id):
        message = self._message(request, agent_id, conversation_id, message_id)
        feedback = getattr(message, "feedback", None)
        if feedback is None:
            raise NotFound("This message has no feedback.")
        return Response(FeedbackSerializer(feedback).data)

    @extend_schema(
        summary="Give (or replace) feedback on an assistant message",
        request=FeedbackInputSerializer,
        responses=FeedbackSerializer,
    )
    def update(self, request, tenant_id, agent_id, conversation_id, message_id):
        message = self._message(request, agent_id, conversation_id, message_id)
        serializer = FeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        feedback = feedback_submit(message=message, **serializer.validated_data)
        return Response(FeedbackSerializer(feedback).data)

    @extend_schema(summary="Remove the feedback on a message", responses={204: None})
    def destroy(self, request, tenant_id, agent_id, conversation_id, message_id):
        message = self._message(request, agent_id, conversation_id, message_id)
        if getattr(message, "feedback", None) is None:
            raise NotFound("This message has no feedback.")
        message.feedback.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class TitleView(AsyncAPIView):
    @extend_schema(
        summary="Propose a title from the conversation (not saved)",
        request=None,
        responses={200: TitleSerializer, 502: ErrorSerializer},
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
