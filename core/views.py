import logging

from adrf.views import APIView
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from core.drain import draining
from core.errors import error_body, v1_exception_handler
from core.schema import V1ErrorSerializer
from core.sse import EventStreamNegotiation

logger = logging.getLogger(__name__)


@csrf_exempt  # any method reaches it, to be refused in the error shape (CSRF answered an HTML 403)
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers (no authentication); 503 while the process
    drains, so that they send it no more work."""
    if request.method not in ("GET", "HEAD"):  # (a plain view: no DRF to refuse TRACE and the rest)
        response = JsonResponse(error_body("method_not_allowed", f'Method "{request.method}" not allowed.'), status=405)
        response["Allow"] = "GET, HEAD"
        return response
    if draining():
        return JsonResponse({"status": "draining", "database": "unchecked"}, status=503)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any database failure means "not healthy"; the cause goes to the log, not the caller
        logger.exception("Health check failed")
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


class V1APIView(EventStreamNegotiation, APIView):
    """Base of the /v1 views: the tenant comes from the key, errors are `{"success": false, "error"}`."""

    error_serializer = V1ErrorSerializer  # for the OpenAPI schema

    def get_exception_handler(self):
        return v1_exception_handler
