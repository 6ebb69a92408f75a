from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from agents.selectors import agent_get
from conversations.selectors import conversation_get, conversation_list, conversation_state_messages
from conversations.serializers import (
    ConversationCreateSerializer,
    ConversationSerializer,
    ConversationStateSerializer,
    ConversationUpdateSerializer,
)
from conversations.services import conversation_create, conversation_delete, conversation_update
from core.pagination import keyset_pagination, parse_limit

STATE_MESSAGES_DEFAULT = 100


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
    destroy=extend_schema(
        summary="Delete a conversation and everything it owns; returns it", responses={200: ConversationSerializer}
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

    def destroy(self, request, tenant_id, agent_id, conversation_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        body = ConversationSerializer(conversation).data
        conversation_delete(conversation=conversation)
        return Response(body)
