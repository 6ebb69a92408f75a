"""Webhooks: a tenant's endpoints, and the outbox of their deliveries. An event is recorded in the
transaction that makes it happen (webhook_event_record), one delivery per endpoint that wants it, so it is
sent if and only if what it tells was committed; turns.webhooks sends them. Every attempt of a delivery
carries the same body and `webhook-id` (the event's id), for the receiver to drop a duplicate."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.crypto import secret_encrypt
from core.errors import NotFound
from core.ids import new_id
from core.signing import signing_secret_new
from core.tenancy import owner_scope
from tenants.models import DeliveryStatus, Tenant, WebhookDelivery, WebhookEndpoint

ATTEMPT_LOG_MAX = 20  # the latest attempts kept with a delivery
_listeners: list[Callable[[], None]] = []  # told after a commit that recorded deliveries (this process's sender)


def webhook_listener_add(listener: Callable[[], None]) -> None:
    _listeners.append(listener)


def webhook_listener_remove(listener: Callable[[], None]) -> None:
    _listeners.remove(listener)


def webhook_event_record(*, tenant_id: str, event_type: str, data: Callable[[], dict[str, Any]], also: str = "") -> int:
    """Record the event for every active endpoint of the tenant that wants it (and `also`, an endpoint
    named for this one, if active), in the caller's transaction; `data()` (the object the event is about)
    is built only if one does. Returns how many deliveries."""
    return webhook_events_record(tenant_id=tenant_id, event_type=event_type, data=lambda: [data()], also=also)


def webhook_events_record(
    *, tenant_id: str, event_type: str, data: Callable[[], list[dict[str, Any]]], also: str = ""
) -> int:
    """webhook_event_record for several events of a type at once (one per item of `data()`), in order."""
    wanted = Q(events__contains=[event_type]) | Q(id=also) if also else Q(events__contains=[event_type])
    endpoints = list(
        WebhookEndpoint.objects.filter(tenant_id=tenant_id, active=True).filter(wanted).values_list("id", flat=True)
    )
    if not endpoints:
        return 0
    now = timezone.now()
    rows = []
    for number, item in enumerate(data()):
        event_id, at = new_id("evt"), now + timedelta(microseconds=number)  # (their order, as given)
        body = json.dumps(
            {"id": event_id, "type": event_type, "timestamp": at, "data": item},
            cls=DjangoJSONEncoder,
            ensure_ascii=False,
            separators=(",", ":"),
        )
        rows += [
            WebhookDelivery(
                tenant_id=tenant_id, endpoint_id=endpoint, event_id=event_id, event_type=event_type, body=body,
                created_at=at, next_attempt_at=at,
            )
            for endpoint in endpoints
        ]  # fmt: skip
    WebhookDelivery.objects.bulk_create(rows)
    transaction.on_commit(_wake)
    return len(rows)


def _wake() -> None:
    for listener in _listeners:
        listener()


# --- Endpoints ------------------------------------------------------------------------------------------


def webhook_endpoint_create(*, tenant: Tenant, url: str, events: list[str], description: str = "", active: bool = True):
    """A new endpoint and its signing secret, which is returned here only."""
    secret = signing_secret_new()
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        url=url,
        events=sorted(set(events)),
        description=description,
        active=active,
        secret_encrypted=secret_encrypt(secret),
    )
    return endpoint, secret


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, data: dict[str, Any]) -> WebhookEndpoint:
    if "events" in data:
        data = {**data, "events": sorted(set(data["events"]))}
    for name, value in data.items():
        setattr(endpoint, name, value)
    if not WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**data) and data:
        raise NotFound("Webhook endpoint not found.")
    return endpoint


def webhook_endpoint_for_url(*, tenant_id: str, url: str) -> str | None:
    """The id of the tenant's active endpoint at exactly this URL (a background post's `webhook_url`)."""
    return (
        WebhookEndpoint.objects.filter(tenant_id=tenant_id, url=url, active=True).values_list("id", flat=True).first()
    )


def webhook_delivery_replay(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send the delivery again (the same body and id), now, however it ended; its retries start again."""
    now = timezone.now()
    changes = {"status": DeliveryStatus.PENDING, "next_attempt_at": now, "created_at": now}
    if not WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes):
        raise NotFound("Delivery not found.")
    for name, value in changes.items():
        setattr(delivery, name, value)
    transaction.on_commit(_wake)
    return delivery


# --- Sending (turns.webhooks): claiming an endpoint's due deliveries, recording an attempt -------------------


@owner_scope()
def webhook_endpoints_due(*, now: datetime, lease_seconds: float, limit: int = 100) -> list[WebhookEndpoint]:
    """Endpoints with a delivery due that no other process is sending, each now leased to this one for
    `lease_seconds` (its deliveries go in order, by one process at a time)."""
    # Each endpoint's first pending delivery (the later ones wait for it), the endpoints whose first is due,
    # the longest waiting first.
    heads = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
        .order_by("endpoint_id", "created_at", "id")
        .distinct("endpoint_id")
        .values_list("endpoint_id", "next_attempt_at")
    )
    due = [endpoint_id for endpoint_id, at in sorted(heads, key=lambda head: head[1]) if at <= now]
    if not due:
        return []
    with transaction.atomic():
        endpoints = list(
            WebhookEndpoint.objects.filter(id__in=due[: limit * 2])
            .filter(Q(sending_until__isnull=True) | Q(sending_until__lt=now))
            .select_for_update(skip_locked=True)[:limit]
        )
        WebhookEndpoint.objects.filter(id__in=[e.id for e in endpoints]).update(
            sending_until=now + timedelta(seconds=lease_seconds)
        )
    return endpoints


@owner_scope()
def webhook_endpoint_lease(endpoint_id: str, *, seconds: float) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(sending_until=timezone.now() + timedelta(seconds=seconds))


@owner_scope()
def webhook_endpoint_release(endpoint_id: str) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(sending_until=None)


@owner_scope()
def webhook_deliveries_next(*, endpoint_id: str, now: datetime, limit: int) -> list[WebhookDelivery]:
    """The endpoint's oldest pending deliveries, in order, up to the first one not due yet (a later event
    never overtakes one that waits for its retry)."""
    pending = WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING).order_by(
        "created_at", "id"
    )
    chosen = []
    for delivery in pending[:limit]:
        if delivery.next_attempt_at > now:
            break
        chosen.append(delivery)
    return chosen


@owner_scope()
def webhook_attempt_record(
    *, delivery: WebhookDelivery, at: datetime, status_code: int | None, error: str, duration_ms: int
) -> WebhookDelivery:
    """Store an attempt's outcome: delivered (a 2xx), or the next attempt after an exponential backoff,
    or failed for good once WEBHOOK_RETRY_HOURS have passed since the event."""
    attempts = delivery.attempts + 1
    entry = {"at": at.isoformat(), "status_code": status_code, "error": error[:500], "duration_ms": duration_ms}
    log = [*delivery.attempt_log, entry][-ATTEMPT_LOG_MAX:]
    changes: dict[str, Any] = {"attempts": attempts, "attempt_log": log}
    if status_code is not None and 200 <= status_code < 300:
        changes.update(status=DeliveryStatus.DELIVERED, delivered_at=at)
    else:
        wait = settings.WEBHOOK_BACKOFF_SECONDS * 2 ** min(attempts - 1, 16)
        next_at = at + timedelta(seconds=min(wait, 3600))
        if next_at > delivery.created_at + timedelta(hours=settings.WEBHOOK_RETRY_HOURS):
            changes.update(status=DeliveryStatus.FAILED)
        else:
            changes.update(next_attempt_at=next_at)
    WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(**changes)
    for name, value in changes.items():
        setattr(delivery, name, value)
    return delivery


PURGE_BATCH = 1000


@owner_scope()
def webhook_deliveries_purge(*, now: datetime | None = None, batches_max: int = 5) -> int:
    """Delete ended deliveries (delivered or failed) older than WEBHOOK_KEEP_DAYS, a batch per statement;
    returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_KEEP_DAYS)
    ended = WebhookDelivery.objects.exclude(status=DeliveryStatus.PENDING).filter(created_at__lt=cutoff)
    deleted = 0
    for _ in range(batches_max):
        ids = list(ended.order_by("created_at").values_list("id", flat=True)[:PURGE_BATCH])
        if not ids:
            break
        deleted += WebhookDelivery.objects.filter(id__in=ids).delete()[0]
    return deleted
