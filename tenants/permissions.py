from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from core.errors import NotFound


class IsTenantMember(BasePermission):
    """The key's tenant must be the one in the URL and active; anything else looks like a missing tenant.
    Routes without a tenant in the URL (/v1) serve the key's tenant, which must be active."""

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if principal is None or not getattr(principal, "is_authenticated", False):
            return False  # DRF answers 401 with WWW-Authenticate
        url_tenant = view.kwargs.get("tenant_id")
        if url_tenant is None and not principal.tenant.is_active:
            raise exceptions.AuthenticationFailed("This API key's tenant is inactive.")
        if (url_tenant is not None and url_tenant != principal.tenant.id) or not principal.tenant.is_active:
            raise NotFound()
        request.tenant = principal.tenant
        return True
