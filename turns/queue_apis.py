"""A conversation's queued turns (messages posted with `if_busy: "enqueue"` while a reply ran): listed, and
taken out of the queue before they start."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.models import QueuedTurn, QueuedTurnStatus
from conversations.selectors import conversation_get
from core.errors import Conflict, NotFound
from turns.apis import _ID_PARAMS
from turns.runtime import queued_turn_cancel
from turns.serializers import QueuedTurnSerializer

QUEUED_EXAMPLE = {
    "id": "qt_01jngf0a7y3c5e8g1j4m6p9r2t",
    "conversation_id": "conv_01jngak3y04wqfkxg2cnc1hw48",
    "status": "queued",
    "content": "And for April?",
    "user_message_id": "",
    "message_id": "",
    "error": "",
    "created_at": "2025-03-04T10:30:02.500000Z",
    "started_at": None,
}
QUEUE_LIMIT = 100


class QueueView(APIView):
    @extend_schema(
        summary="List the conversation's queued turns",
        description="The turns waiting for the running reply (`queued`), oldest first, each with the question "
        f"as posted, and the latest {QUEUE_LIMIT} that left the queue (`started` with their message ids, "
        "`cancelled`, or `failed` with why).\n\nErrors: 404 for a conversation that is not the tenant's under "
        "this agent.",
        parameters=_ID_PARAMS,
        responses=QueuedTurnSerializer(many=True),
        examples=[OpenApiExample("A question waiting its turn", value=[QUEUED_EXAMPLE], response_only=True)],
    )
    def get(self, request, tenant_id, agent_id, conversation_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        turns = QueuedTurn.objects.filter(tenant=request.tenant, conversation=conversation)
        waiting = list(turns.filter(status=QueuedTurnStatus.QUEUED).order_by("created_at", "id"))
        done = list(turns.exclude(status=QueuedTurnStatus.QUEUED).order_by("-created_at", "-id")[:QUEUE_LIMIT])
        return Response(QueuedTurnSerializer(waiting + done[::-1], many=True).data)


class QueuedTurnView(APIView):
    @extend_schema(
        summary="Take a queued message out of the queue",
        description="The turn will not run; a post-and-wait or stream waiting for it answers 409. Answers it, "
        "`cancelled`. No request body.\n\nErrors: 404 for a queued turn that is not of this conversation of the "
        "tenant; 409 once it has started (cancel its reply instead) or left the queue.",
        parameters=[*_ID_PARAMS, OpenApiParameter("queued_turn_id", str, OpenApiParameter.PATH)],
        request=None,
        responses={200: QueuedTurnSerializer},
        examples=[OpenApiExample("Cancelled", value={**QUEUED_EXAMPLE, "status": "cancelled"}, response_only=True)],
    )
    def delete(self, request, tenant_id, agent_id, conversation_id, queued_turn_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        turns = QueuedTurn.objects.filter(tenant=request.tenant, conversation=conversation, id=queued_turn_id)
        if not turns.exists() or not queued_turn_cancel(queued_turn_id):
            turn = turns.first()
            if turn is None:
                raise NotFound("Queued turn not found.")
            raise Conflict(
                f"It has left the queue ({turn.status}).",
                details={"status": turn.status, "message_id": turn.message_id},
            )
        return Response(QueuedTurnSerializer(turns.get()).data)
