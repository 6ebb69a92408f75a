"""Sending webhook deliveries (tenants.webhooks records them): every process runs the sender beside its
maintenance. It takes endpoints with deliveries due (one process per endpoint at a time, by a lease), and
sends each one's in the order of their events, at most WEBHOOK_MAX_IN_FLIGHT at a time, through the same
guarded transport as tenants' tools (no private address unless TOOL_ALLOWED_NETWORKS allows it, no
redirect). A delivery that fails is tried again after an exponential backoff, and a later one of the
same endpoint waits for it, until WEBHOOK_RETRY_HOURS after its event. Never from a request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx2
from django.conf import settings
from django.utils import timezone

from agents.outbound import Refused, pinned_client, pinned_transport
from core.crypto import secret_decrypt
from core.db import in_worker
from core.drain import draining
from core.signing import signed_headers
from tenants.models import WebhookDelivery, WebhookEndpoint
from tenants.webhooks import (
    webhook_attempt_record,
    webhook_deliveries_next,
    webhook_endpoint_lease,
    webhook_endpoint_release,
    webhook_endpoints_due,
    webhook_listener_add,
)

logger = logging.getLogger(__name__)

RESPONSE_MAX_BYTES = 64 * 1024  # what is read of a receiver's answer (its status is what counts)
_sending: dict[str, asyncio.Task] = {}  # endpoint id -> the task sending its deliveries in this process


def _lease_seconds() -> float:
    return settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 10


async def webhooks_send_due() -> list[asyncio.Task]:
    """Start sending the deliveries due of the endpoints no process is sending; returns the tasks."""
    endpoints = await in_worker(webhook_endpoints_due)(now=timezone.now(), lease_seconds=_lease_seconds())
    started = []
    for endpoint in endpoints:
        if endpoint.id in _sending:  # (its lease ran out while this process still sends: it goes on)
            continue
        task = asyncio.get_running_loop().create_task(_send_endpoint(endpoint), name=f"webhooks {endpoint.id}")
        _sending[endpoint.id] = task
        task.add_done_callback(lambda _, key=endpoint.id: _sending.pop(key, None))
        started.append(task)
    return started


async def _send_endpoint(endpoint: WebhookEndpoint) -> None:
    try:
        secret = secret_decrypt(endpoint.secret_encrypted)
        while True:
            batch = await in_worker(webhook_deliveries_next)(
                endpoint_id=endpoint.id, now=timezone.now(), limit=settings.WEBHOOK_MAX_IN_FLIGHT
            )
            if not batch:
                return
            await asyncio.gather(*(_attempt(endpoint, secret, delivery) for delivery in batch))
            await in_worker(webhook_endpoint_lease)(endpoint.id, seconds=_lease_seconds())
    except Exception:
        logger.exception("Sending the webhooks of %s failed", endpoint.id)
    finally:
        await in_worker(webhook_endpoint_release)(endpoint.id)


async def _attempt(endpoint: WebhookEndpoint, secret: str, delivery: WebhookDelivery) -> None:
    at, started = timezone.now(), time.monotonic()
    status_code, error = None, ""
    body = delivery.body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Parley-Webhooks/1"}
    headers.update(signed_headers(secret, message_id=delivery.event_id, body=body))
    try:
        async with asyncio.timeout(settings.WEBHOOK_TIMEOUT_SECONDS):
            transport = await pinned_transport(
                endpoint.url, max_response_bytes=RESPONSE_MAX_BYTES, what="The webhook endpoint"
            )
            async with pinned_client(transport, timeout=settings.WEBHOOK_TIMEOUT_SECONDS, headers=headers) as client:
                answer = await client.post(endpoint.url, content=body)
                status_code = answer.status_code
                if not answer.is_success:
                    error = f"Answered {status_code}."
    except Refused as exc:
        error = str(exc)
    except (httpx2.TimeoutException, TimeoutError):
        error = f"No answer within {settings.WEBHOOK_TIMEOUT_SECONDS:g} s."
    except httpx2.HTTPError as exc:
        error = f"Not reached ({type(exc).__name__})."
    duration_ms = int((time.monotonic() - started) * 1000)
    await in_worker(webhook_attempt_record)(
        delivery=delivery, at=at, status_code=status_code, error=error, duration_ms=duration_ms
    )


async def webhooks_send_forever() -> None:
    """Every WEBHOOK_POLL_SECONDS, or at once when this process commits an event, until it drains
    (another process, or this one's next start, sends what is left)."""
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()
    webhook_listener_add(lambda: loop.call_soon_threadsafe(wake.set))
    while not draining():
        try:
            await webhooks_send_due()
        except Exception:  # the database may be briefly unreachable: try again next time
            logger.exception("Sending webhooks failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), settings.WEBHOOK_POLL_SECONDS)
        wake.clear()
