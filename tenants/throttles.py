from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key, from the THROTTLE_RATE setting or the tenant's own requests_per_minute."""

    scope = "api_key"

    def get_rate(self) -> str:
        return settings.THROTTLE_RATE  # read per request, so settings overrides take effect

    def allow_request(self, request, view) -> bool:
        tenant = getattr(request.user, "tenant", None)
        if tenant is not None and tenant.requests_per_minute:
            self.num_requests, self.duration = tenant.requests_per_minute, 60
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str | None:
        if request.auth is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.prefix}
