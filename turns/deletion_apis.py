"""The endpoints that delete agents and conversations. Deleting stops the replies they are generating and
removes their files' and data frames' stored bytes (turns.services), so these views extend the lower
apps' viewsets with the delete actions; every other action is theirs."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from agents import apis as agent_apis
from agents.selectors import agent_get
from agents.serializers import AgentSerializer
from conversations import apis as conversation_apis
from conversations.selectors import conversation_get
from conversations.serializers import (
    BulkDeleteResultSerializer,
    BulkDeleteSerializer,
    ConversationSerializer,
    DeleteAllResultSerializer,
)
from core.errors import Invalid
from turns.services import agent_delete, conversation_delete, conversation_delete_all, conversation_delete_by_ids


class DeletableAgentViewSet(agent_apis.AgentViewSet):
    @extend_schema(summary="Delete an agent with its conversations", responses={200: AgentSerializer})
    def destroy(self, request, tenant_id, agent_id):
        agent = agent_get(tenant=request.tenant, agent_id=agent_id)
        body = AgentSerializer(agent).data
        agent_delete(agent=agent)
        return Response(body)


class DeletableConversationViewSet(conversation_apis.ConversationViewSet):
    @extend_schema(
        summary="Delete a conversation and everything it owns; returns it", responses={200: ConversationSerializer}
    )
    def destroy(self, request, tenant_id, agent_id, conversation_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        body = ConversationSerializer(conversation).data
        conversation_delete(conversation=conversation)
        return Response(body)


class DeletableTenantConversationViewSet(conversation_apis.TenantConversationViewSet):
    @extend_schema(
        summary="Delete up to 100 conversations by id",
        request=BulkDeleteSerializer,
        responses=BulkDeleteResultSerializer,
    )
    def bulk_delete(self, request, tenant_id):
        serializer = BulkDeleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        deleted, failed = conversation_delete_by_ids(tenant_id=request.tenant.id, ids=serializer.validated_data["ids"])
        return Response({"deleted": deleted, "failed": failed})

    @extend_schema(
        summary="Delete all the tenant's conversations (needs ?confirm=true)",
        parameters=[OpenApiParameter("confirm", bool, required=True)],
        responses={200: DeleteAllResultSerializer},
    )
    def destroy_all(self, request, tenant_id):
        if request.query_params.get("confirm") != "true":
            raise Invalid("confirm: pass confirm=true to delete every conversation.", details={"confirm": False})
        return Response({"deleted": conversation_delete_all(tenant_id=request.tenant.id)})
