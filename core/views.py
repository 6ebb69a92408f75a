import logging
from inspect import iscoroutinefunction

from adrf.views import APIView as AdrfAPIView
from django.db import connection
from django.http import HttpRequest, JsonResponse

logger = logging.getLogger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers (no authentication)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any database failure means "not healthy"; the cause goes to the log, not the caller
        logger.exception("Health check failed")
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


class AsyncAPIView(AdrfAPIView):
    """An async DRF view (adrf): async handlers, with DRF's authentication, permissions and throttling.

    adrf checks throttles in the request's thread and then, for async ones, hops back to the event loop
    with async_to_sync, even when there is none: two thread switches per request, each waiting its turn on
    a loop that may be busy. Parley's throttle is sync (a cache counter), so only DRF's own check runs.
    """

    def check_throttles(self, request) -> None:
        throttles = self.get_throttles()
        if any(iscoroutinefunction(throttle.allow_request) for throttle in throttles):
            return super().check_throttles(request)
        waits = [throttle.wait() for throttle in throttles if not throttle.allow_request(request, self)]
        if waits:  # as DRF's own check: the longest wait (None where a throttle cannot tell)
            self.throttled(request, max((wait for wait in waits if wait is not None), default=None))
