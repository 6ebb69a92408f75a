"""Async views (adrf) throttle like DRF's: 429 with Retry-After, from sync and async throttles alike."""

from adrf.views import APIView as AsyncAPIView
from django.test import AsyncRequestFactory
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle


class Refuse(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        return False

    def wait(self) -> float:
        return 7


class RefuseAsync(Refuse):
    async def allow_request(self, request, view) -> bool:
        return False


class Allow(BaseThrottle):
    def allow_request(self, request, view) -> bool:
        return True


def view_with(*throttles):
    class View(AsyncAPIView):
        authentication_classes = []
        permission_classes = []
        throttle_classes = list(throttles)

        async def get(self, request):
            return Response({"ok": True})

    return View.as_view()


async def test_sync_throttles_refuse_with_retry_after():
    request = AsyncRequestFactory().get("/anything")
    allowed = await view_with(Allow)(request)
    assert allowed.status_code == 200
    refused = await view_with(Allow, Refuse)(AsyncRequestFactory().get("/anything"))
    assert refused.status_code == 429 and refused["Retry-After"] == "7"


async def test_async_throttles_still_count():
    refused = await view_with(Allow, RefuseAsync)(AsyncRequestFactory().get("/anything"))
    assert refused.status_code == 429 and refused["Retry-After"] == "7"
