from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.response import Response

from agents.selectors import agent_get, agent_list
from agents.serializers import AgentInputSerializer, AgentSerializer
from agents.services import agent_create, agent_update
from core.pagination import keyset_pagination


@extend_schema_view(
    list=extend_schema(summary="List agents", responses=AgentSerializer(many=True)),
    create=extend_schema(summary="Create an agent", request=AgentInputSerializer, responses={201: AgentSerializer}),
    retrieve=extend_schema(summary="Get an agent", responses=AgentSerializer),
    partial_update=extend_schema(summary="Update an agent", request=AgentInputSerializer, responses=AgentSerializer),
)
class AgentViewSet(viewsets.GenericViewSet):
    serializer_class = AgentSerializer
    pagination_class = keyset_pagination("-created_at", "-id")
    lookup_url_kwarg = "agent_id"

    def get_queryset(self):
        return agent_list(tenant=self.request.tenant)

    def list(self, request, tenant_id):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(AgentSerializer(page, many=True).data)

    def create(self, request, tenant_id):
        serializer = AgentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        agent = agent_create(tenant=request.tenant, data=serializer.validated_data)
        return Response(AgentSerializer(agent).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, tenant_id, agent_id):
        return Response(AgentSerializer(agent_get(tenant=request.tenant, agent_id=agent_id)).data)

    def partial_update(self, request, tenant_id, agent_id):
        agent = agent_get(tenant=request.tenant, agent_id=agent_id)
        serializer = AgentInputSerializer(instance=agent, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        return Response(AgentSerializer(agent_update(agent=agent, data=serializer.validated_data)).data)
