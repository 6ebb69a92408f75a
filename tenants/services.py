from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.errors import Invalid, NotFound
from tenants.models import ApiKey, DailyUsage, Tenant

KEY_SCHEME = "prl"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash_secret(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: nothing can be brute-forced,
    # and a slow KDF would cost every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def tenant_create(*, tenant_id: str, name: str = "") -> Tenant:
    tenant = Tenant(id=tenant_id, name=name or tenant_id)
    tenant.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            tenant.save(force_insert=True)
    except IntegrityError:
        raise Invalid(f"tenant_id: a tenant {tenant_id!r} already exists.") from None
    return tenant


def api_key_create(*, tenant: Tenant, name: str = "") -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never retrievable again."""
    for _ in range(5):
        prefix = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(tenant=tenant, name=name, prefix=prefix, hash=_hash_secret(secret))
        except IntegrityError:  # prefix collision: 1 in 4 billion, try another
            continue
        return key, f"{KEY_SCHEME}_{prefix}_{secret}"
    raise RuntimeError("could not allocate a unique API key prefix")


def api_key_revoke(*, prefix: str) -> ApiKey:
    key = ApiKey.objects.filter(prefix=prefix.removeprefix(f"{KEY_SCHEME}_")).first()
    if key is None:
        raise NotFound(f"No API key with prefix {prefix!r}.")
    key.revoke()
    return key


def api_key_verify(raw_key: str) -> ApiKey | None:
    """The active key for a presented secret, or None; also notes when it was last used."""
    scheme, _, rest = raw_key.partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != KEY_SCHEME or len(prefix) != 8 or not secret:
        return None
    try:  # get(), not first(): the prefix is unique, and an ORDER BY costs every request
        key = ApiKey.objects.select_related("tenant").get(prefix=prefix)
    except ApiKey.DoesNotExist:
        return None
    if key.is_revoked:
        return None
    if not hmac.compare_digest(key.hash, _hash_secret(secret)):
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        # At most one write a minute per key: the column is for operators, not an audit log.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


_USAGE = DailyUsage._meta.db_table
USAGE_ADD = (
    f"INSERT INTO {_USAGE} (tenant_id, day, agent_id, engine, model, requests, input_tokens, output_tokens)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (tenant_id, day, agent_id, engine, model)"
    f" DO UPDATE SET requests = {_USAGE}.requests + EXCLUDED.requests,"
    f" input_tokens = {_USAGE}.input_tokens + EXCLUDED.input_tokens,"
    f" output_tokens = {_USAGE}.output_tokens + EXCLUDED.output_tokens"
)


def usage_record(
    *,
    tenant_id: str,
    agent_id: str = "",
    engine: str = "",
    model: str = "",
    requests: int = 1,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> None:
    """Add to today's usage counters of the agent and model: one upsert, safe under concurrency.

    Every reply of a tenant that day adds to the same row, so its lock is held until the commit: inside a
    reply's own transaction, or waiting for the commit's flush to disk, it made replies ending together
    wait for each other (2 s of lock waits for 200 replies). Called outside a transaction, it commits on
    its own without waiting for the flush (synchronous_commit off, for this transaction only): a crash of
    PostgreSQL itself may lose the last moments' counts, never a reply, and nothing is ever half-written.
    """
    day = timezone.now().date()
    own_transaction = not connection.in_atomic_block  # else the setting would hold for the caller's commit
    with transaction.atomic(), connection.cursor() as cursor:
        if own_transaction:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(USAGE_ADD, [tenant_id, day, agent_id, engine, model, requests, input_tokens, output_tokens])


# --- WebSocket tickets -------------------------------------------------------------------------------
# A browser cannot send `Authorization` on a WebSocket handshake, and a key must never be in a URL (or a
# log): an API request exchanges its key for a ticket, single use and short-lived, which the page passes as
# `?ticket=`. Kept in the cache (Redis with REDIS_URL, so any process redeems it), only as a hash.

_TICKET_KEY = "ws-ticket:{}"


def ws_ticket_issue(*, api_key: ApiKey) -> tuple[str, datetime]:
    """A new ticket for the key, and when it expires."""
    ticket = secrets.token_urlsafe(32)
    seconds = settings.WS_TICKET_SECONDS
    cache.set(_TICKET_KEY.format(_hash_secret(ticket)), api_key.pk, timeout=seconds)
    return ticket, timezone.now() + timedelta(seconds=seconds)


def ws_ticket_redeem(ticket: str) -> ApiKey | None:
    """The live key a ticket was issued for, once: a ticket redeemed, expired, unknown or of a key revoked
    since is None."""
    if not ticket or len(ticket) > 100:
        return None
    key = _TICKET_KEY.format(_hash_secret(ticket))
    api_key_id = cache.get(key)
    if api_key_id is None or not cache.delete(key):  # (two redeemers: only one deletes it)
        return None
    return ApiKey.objects.active().select_related("tenant").filter(pk=api_key_id).first()
