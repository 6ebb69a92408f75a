from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.tenancy import owner_scope, tenant_scope, tenant_scope_enter
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_verify, ws_ticket_redeem


@dataclass(frozen=True)
class ApiPrincipal:
    """`request.user` of an API request: the tenant a valid key belongs to."""

    tenant: Tenant
    api_key: ApiKey
    is_authenticated: bool = True
    is_anonymous: bool = False


def bearer_token(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def principal_for_header(header: str, tenant_id: str | None = None) -> ApiPrincipal:
    """Authenticate an `Authorization` header value; raise AuthenticationFailed when it is not a live key.
    `tenant_id`: the tenant the request names (its URL's), if any.

    The rest of the request, and what it starts, is then scoped to the key's tenant: its queries see
    only that tenant's rows (core.tenancy)."""
    token = bearer_token(header)
    if token is None:
        raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <API key>'.")
    key = None
    if tenant_id:  # looked up as that tenant's requests run: no change of role or tenant on the connection
        with tenant_scope(tenant_id):
            key = api_key_verify(token)
    if key is None:  # /v1, or the key of another tenant (then 404) or none: the owner finds whose it is
        with owner_scope():
            key = api_key_verify(token)
    if key is None:
        raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
    tenant_scope_enter(key.tenant_id)
    return ApiPrincipal(tenant=key.tenant, api_key=key)


def principal_for_ticket(ticket: str) -> ApiPrincipal:
    """Authenticate a WebSocket ticket (tenants.services.ws_ticket_redeem), spending it."""
    with owner_scope():  # whose ticket it is is what is being found out
        key = ws_ticket_redeem(ticket)
    if key is None:
        raise exceptions.AuthenticationFailed("Unknown, expired or already used ticket.")
    tenant_scope_enter(key.tenant_id)
    return ApiPrincipal(tenant=key.tenant, api_key=key)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        principal = principal_for_header(header, (request.parser_context or {}).get("kwargs", {}).get("tenant_id"))
        return principal, principal.api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
