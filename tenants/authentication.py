from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.errors import Forbidden, NotFound
from core.tenancy import owner_scope, tenant_scope, tenant_scope_enter
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_verify, ws_ticket_redeem

PLAYGROUND_PERMISSION = "tenants.use_playground"


@dataclass(frozen=True)
class ApiPrincipal:
    """`request.user` of an API request: the tenant a valid key belongs to, or the tenant a staff user
    acts on from the admin's playground (`user`, signed in with the session `session_key`; no key)."""

    tenant: Tenant
    api_key: ApiKey | None
    user: AbstractBaseUser | None = None
    session_key: str | None = None
    is_authenticated: bool = True
    is_anonymous: bool = False

    @property
    def rate_key(self) -> str:
        """Whose requests the rate limit counts: the key's, or the staff user's."""
        return self.api_key.prefix if self.api_key is not None else f"user-{self.user.pk}"


def principals_refused(principals: list[ApiPrincipal]) -> list[Exception | None]:
    """For each principal, why it is no longer allowed, as checked again while sockets stay open (None: it
    still is): its key revoked, or its user signed out (the session ended, expired, or another password) or
    no longer staff with the permission (401); its tenant deactivated (404, as the tenant's requests now
    are). One query for the keys, one for the tenants, and two per staff session."""
    with owner_scope():
        key_ids = {principal.api_key.pk for principal in principals if principal.api_key is not None}
        live_keys = set(ApiKey.objects.active().filter(pk__in=key_ids).values_list("pk", flat=True))
        tenant_ids = {principal.tenant.pk for principal in principals}
        active = set(Tenant.objects.filter(pk__in=tenant_ids, is_active=True).values_list("pk", flat=True))
        staff = {}
        for principal in principals:
            if principal.api_key is None and principal.session_key not in staff:
                user = get_user_model()._default_manager.filter(pk=principal.user.pk).first()
                staff[principal.session_key] = may_use_playground(user) and _signed_in(principal.session_key, user)

    def refused(principal: ApiPrincipal) -> Exception | None:
        if principal.api_key is not None and principal.api_key.pk not in live_keys:
            return exceptions.AuthenticationFailed("This API key was revoked.")
        if principal.api_key is None and not staff[principal.session_key]:
            return exceptions.AuthenticationFailed("Signed out, or no longer allowed the playground.")
        if principal.tenant.pk not in active:
            return NotFound("This tenant was deactivated.")
        return None

    return [refused(principal) for principal in principals]


def _signed_in(session_key: str | None, user: AbstractBaseUser) -> bool:
    """Whether the session still signs `user` in, as Django's get_user() decides: it exists, has not
    expired, names the user, and holds the hash of the user's current password."""
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return session.get(SESSION_KEY) == str(user.pk) and constant_time_compare(
        session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
    )


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


def may_use_playground(user: AbstractBaseUser | None) -> bool:
    """Active staff with the playground's permission (superusers have it)."""
    return bool(user and user.is_active and user.is_staff and user.has_perm(PLAYGROUND_PERMISSION))


def principal_for_staff(user: AbstractBaseUser | None, tenant_id: str, session_key: str | None) -> ApiPrincipal | None:
    """The principal of a signed-in staff user acting on the URL's tenant, or None when the user is not
    one allowed to (anonymous, not staff, without the permission): then the request is unauthenticated.
    An unknown or inactive tenant is 404.

    A session is a browser's cookie, which any page can make the browser send: the caller has checked
    CSRF (session_csrf_check)."""
    with owner_scope():  # the user and their permissions are not a tenant's rows
        if not may_use_playground(user):
            return None
        tenant = Tenant.objects.filter(pk=tenant_id, is_active=True).first()
    if tenant is None:
        raise NotFound()
    tenant_scope_enter(tenant.id)
    return ApiPrincipal(tenant=tenant, api_key=None, user=user, session_key=session_key)


def session_csrf_check(request: HttpRequest) -> None:
    """Django's CSRF check of a request made with a session, as for a form post: the page's token, and an
    Origin (or Referer) of this site or CSRF_TRUSTED_ORIGINS. PermissionDenied (403) when it fails."""
    StaffSessionAuthentication().enforce_csrf(request)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        principal = principal_for_header(header, (request.parser_context or {}).get("kwargs", {}).get("tenant_id"))
        return principal, principal.api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """A staff user's admin session on a tenant's API (`/tenants/<id>/api/v2/`), as the playground page
    calls it: see principal_for_staff. Not for /v1, whose tenant is the key's. Tried after the key: a
    request with `Authorization` is the key's alone."""

    def enforce_csrf(self, request) -> None:
        unsafe = request.method not in ("GET", "HEAD", "OPTIONS", "TRACE")
        if unsafe and not request.META.get(settings.CSRF_HEADER_NAME):  # (refused before anything reads the body)
            raise Forbidden("CSRF Failed: send the page's CSRF token (X-CSRFToken).")
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:  # (DRF's is answered as not_found: no resource is hidden here)
            raise Forbidden(f"{exc.detail} Send the page's CSRF token (X-CSRFToken).") from None

    def authenticate(self, request: Request) -> tuple[ApiPrincipal, None] | None:
        tenant_id = (request.parser_context or {}).get("kwargs", {}).get("tenant_id")
        if not tenant_id or request.META.get("HTTP_AUTHORIZATION"):
            return None
        with owner_scope():  # the session and its user are not a tenant's rows
            signed_in = super().authenticate(request)  # (then CSRF checked: 403 when it fails)
        if signed_in is None:
            return None
        principal = principal_for_staff(signed_in[0], tenant_id, request.session.session_key)
        return None if principal is None else (principal, None)
