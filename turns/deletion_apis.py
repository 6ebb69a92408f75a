"""The endpoints that delete agents and conversations. Deleting stops the replies they are generating and
removes their files' and data frames' stored bytes (turns.services), so these views extend the lower
apps' viewsets with the delete actions; every other action is theirs."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
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

_CONVERSATION_IDS = [conversation_apis.CONVERSATION_ID, "conv_01jngbsjd0cej6z2qzrf0262wz"]


class DeletableAgentViewSet(agent_apis.AgentViewSet):
    @extend_schema(
        summary="Delete an agent with its conversations",
        description="Deletes the agent and every conversation it has, with their messages, files and data "
        "frames (their stored bytes included); the replies they are generating are stopped. Answers the agent "
        "as it was. This cannot be undone.\n\nErrors: 404 for an agent that is not the tenant's.",
        responses={200: AgentSerializer},
        examples=[OpenApiExample("The deleted agent", value=agent_apis.AGENT_EXAMPLE, response_only=True)],
    )
    def destroy(self, request, tenant_id, agent_id):
        agent = agent_get(tenant=request.tenant, agent_id=agent_id)
        body = AgentSerializer(agent).data
        agent_delete(agent=agent)
        return Response(body)


class DeletableConversationViewSet(conversation_apis.ConversationViewSet):
    @extend_schema(
        summary="Delete a conversation and everything it owns; returns it",
        description="Deletes the conversation with its messages, feedback, citations, files and data frames "
        "(their stored bytes included); a reply it is generating is stopped. Answers the conversation as it "
        "was. This cannot be undone.\n\nErrors: 404 for a conversation that is not the tenant's under this "
        "agent.",
        responses={200: ConversationSerializer},
        examples=[
            OpenApiExample("The deleted conversation", value=conversation_apis.CONVERSATION_EXAMPLE, response_only=True)
        ],
    )
    def destroy(self, request, tenant_id, agent_id, conversation_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        body = ConversationSerializer(conversation).data
        conversation_delete(conversation=conversation)
        return Response(body)


class DeletableTenantConversationViewSet(conversation_apis.TenantConversationViewSet):
    @extend_schema(
        summary="Delete up to 100 conversations by id",
        description="Deletes the tenant's conversations among `ids` (1 to 100 ids, each at most 40 characters "
        "and listed once), whatever their agent, each as `DELETE` on the conversation would. Ids that are not "
        "the tenant's conversations change nothing and come back in `failed`; `deleted` counts the others.\n\n"
        "Errors: 400 for an empty list, more than 100 ids, an id listed twice or longer than 40 characters, or "
        "an id that is not a string.",
        request=BulkDeleteSerializer,
        responses=BulkDeleteResultSerializer,
        examples=[
            OpenApiExample("Two conversations", value={"ids": _CONVERSATION_IDS}, request_only=True),
            OpenApiExample(
                "One deleted, one not found",
                value={"deleted": 1, "failed": [_CONVERSATION_IDS[1]]},
                response_only=True,
            ),
        ],
    )
    def bulk_delete(self, request, tenant_id):
        serializer = BulkDeleteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        deleted, failed = conversation_delete_by_ids(tenant_id=request.tenant.id, ids=serializer.validated_data["ids"])
        return Response({"deleted": deleted, "failed": failed})

    @extend_schema(
        summary="Delete all the tenant's conversations (needs ?confirm=true)",
        description="Deletes every conversation of the tenant, of all its agents, each as `DELETE` on the "
        "conversation would; the agents stay. `confirm=true` is required, exactly. Answers how many were "
        "deleted.\n\nErrors: 400 without `confirm=true`.",
        parameters=[
            OpenApiParameter(
                "confirm", {"type": "boolean", "enum": [True]}, required=True, description="Must be `true`."
            )
        ],
        responses={200: DeleteAllResultSerializer},
        examples=[OpenApiExample("Deleted", value={"deleted": 12}, response_only=True)],
    )
    def destroy_all(self, request, tenant_id):
        if request.query_params.get("confirm") != "true":
            raise Invalid("confirm: pass confirm=true to delete every conversation.", details={"confirm": False})
        return Response({"deleted": conversation_delete_all(tenant_id=request.tenant.id)})
