"""Idempotency-Key handling for POSTs that run an agent (Stripe's semantics).

The first request with a key claims it and stores its response; a retry with the same key and body gets
that response replayed without running anything; with a different body it is refused (422). A retry that
arrives while the first is still running waits up to IDEMPOTENCY_WAIT_SECONDS for its result, then gets
409. Requests refused before any work started (validation, conflicts) release the key, so they can be
retried. A running request renews its claim; one whose process died (no renewal for
GENERATION_STALE_SECONDS) can be taken over by the next retry. Keys are scoped per tenant and kept
IDEMPOTENCY_TTL_HOURS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from core.db import in_worker
from core.errors import Conflict, IdempotencyKeyReused, Invalid
from core.models import IdempotencyKey
from core.tenancy import owner_scope, scoped_context

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def request_fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _expiry_cutoff():
    return timezone.now() - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)


def idempotency_claim(*, tenant_id: str, key: str, fingerprint: str) -> IdempotencyKey | None:
    """Claim the key: None if this request owns it now, else the existing row."""
    now = timezone.now()
    IdempotencyKey.objects.filter(tenant_id=tenant_id, key=key).filter(
        Q(created_at__lt=_expiry_cutoff()) | Q(response_status__isnull=True, claimed_until__lt=now)
    ).delete()
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(
                tenant_id=tenant_id, key=key, fingerprint=fingerprint, claimed_until=_claim_end(now)
            )
        return None
    except IntegrityError:
        existing = IdempotencyKey.objects.filter(tenant_id=tenant_id, key=key).first()
        if existing is None:  # released between our insert and read: try once more
            return idempotency_claim(tenant_id=tenant_id, key=key, fingerprint=fingerprint)
        return existing


def _claim_end(now):
    return now + timedelta(seconds=settings.GENERATION_STALE_SECONDS)


def idempotency_renew(*, tenant_id: str, key: str) -> None:
    IdempotencyKey.objects.filter(tenant_id=tenant_id, key=key, response_status__isnull=True).update(
        claimed_until=_claim_end(timezone.now())
    )


def idempotency_store(*, tenant_id: str, key: str, status: int, body: dict) -> None:
    IdempotencyKey.objects.filter(tenant_id=tenant_id, key=key).update(
        response_status=status, response_body=json.dumps(body), claimed_until=None
    )


def idempotency_release(*, tenant_id: str, key: str) -> None:
    IdempotencyKey.objects.filter(tenant_id=tenant_id, key=key, response_status__isnull=True).delete()


@owner_scope()  # every tenant's
def idempotency_purge_expired() -> int:
    return IdempotencyKey.objects.filter(created_at__lt=_expiry_cutoff()).delete()[0]


async def run_idempotent(
    *, tenant_id: str, key: str | None, fingerprint: str, run: Callable[[], Awaitable[tuple[int, dict]]]
) -> tuple[int, dict]:
    """Run `run()` once per key; it returns (status, body) and raises ApplicationError when refused."""
    if not key:
        return await run()
    if len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Invalid(f"{HEADER}: must be at most {MAX_KEY_LENGTH} printable characters.")
    deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_SECONDS
    while True:
        existing = await in_worker(idempotency_claim)(tenant_id=tenant_id, key=key, fingerprint=fingerprint)
        if existing is None:
            break
        if existing.fingerprint != fingerprint:
            raise IdempotencyKeyReused(details={"idempotency_key": key})
        if existing.response_status is not None:
            return existing.response_status, json.loads(existing.response_body)
        if time.monotonic() >= deadline:
            raise Conflict("A request with this Idempotency-Key is still running.", details={"idempotency_key": key})
        await asyncio.sleep(0.05)
    # The work outlives a disconnected client, and so must the recording of its result for the retry:
    # it runs in a context of its own (but for its tenant), so none of its calls depends on the request's thread.
    task = asyncio.get_running_loop().create_task(
        _run_and_record(tenant_id=tenant_id, key=key, run=run), context=scoped_context(tenant_id)
    )
    _recording.add(task)
    task.add_done_callback(_recording.discard)
    return await asyncio.shield(task)


_recording: set[asyncio.Future] = set()


async def _run_and_record(*, tenant_id: str, key: str, run: Callable[[], Awaitable[tuple[int, dict]]]):
    renewing = asyncio.create_task(_renew_claim(tenant_id=tenant_id, key=key))
    try:
        status, body = await run()
    except BaseException:
        await in_worker(idempotency_release)(tenant_id=tenant_id, key=key)
        raise
    finally:
        renewing.cancel()
    await in_worker(idempotency_store)(tenant_id=tenant_id, key=key, status=status, body=body)
    return status, body


async def _renew_claim(*, tenant_id: str, key: str) -> None:
    while True:
        await asyncio.sleep(settings.GENERATION_STALE_SECONDS / 3)
        try:
            await in_worker(idempotency_renew)(tenant_id=tenant_id, key=key)
        except Exception:  # a database blip: the next renewal may work, and the claim has time left
            logger.warning("Renewing the claim of Idempotency-Key %r failed", key, exc_info=True)
