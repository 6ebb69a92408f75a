from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from agents.selectors import agent_get
from conversations.selectors import conversation_get, conversation_list
from conversations.serializers import (
    ConversationCreateSerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
)
from conversations.services import conversation_create, conversation_delete, conversation_update
from core.pagination import keyset_pagination


@extend_schema_view(
    list=extend_schema(summary="List the agent's conversations, newest activity first"),
    create=extend_schema(
        summary="Create a conversation", request=ConversationCreateSerializer, responses={201: ConversationSerializer}
    ),
    retrieve=extend_schema(summary="Get a conversation"),
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
        return Response(ConversationSerializer(conversation).data)

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
