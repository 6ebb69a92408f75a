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
    webhook_listener_remove,
)

logger = logging.getLogger(__name__)

RESPONSE_MAX_BYTES = 64 * 1024  # what is read of a receiver's answer (its status is what counts)
_sending: dict[str, asyncio.Task] = {}  # endpoint id -> the task sending its deliveries in this process


def _lease_seconds() -> float:
    return settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 10


WINDOW = 50  # deliveries of an endpoint read at a time, sent WEBHOOK_MAX_IN_FLIGHT at a time


async def webhooks_send_due() -> list[asyncio.Task]:
    """Start sending the deliveries due of the endpoints no process is sending; returns the tasks."""
    endpoints = await in_worker(webhook_endpoints_due)(now=timezone.now(), lease_seconds=_lease_seconds())
    started = []
    for endpoint in endpoints:
        # A task of this process may still be finishing with the endpoint (it released its lease, and this
        # poll took it again): the new one starts after it.
        previous = _sending.get(endpoint.id)
        task = asyncio.get_running_loop().create_task(
            _send_endpoint(endpoint, after=previous), name=f"webhooks {endpoint.id}"
        )
        _sending[endpoint.id] = task
        task.add_done_callback(
            lambda done, key=endpoint.id: _sending.pop(key, None) if _sending.get(key) is done else None
        )
        started.append(task)
    return started


async def _send_endpoint(endpoint: WebhookEndpoint, *, after: asyncio.Task | None) -> None:
    """Send the endpoint's due deliveries in order over one client (its connections reused), at most
    WEBHOOK_MAX_IN_FLIGHT at a time; after a failure, none that comes later until the next round."""
    if after is not None:
        await asyncio.wait([after])
    client = None
    # The lease is renewed while the endpoint is being sent, however long its receiver takes.
    renewing = asyncio.get_running_loop().create_task(_lease_kept(endpoint.id))
    try:
        try:
            secret = secret_decrypt(endpoint.secret_encrypted)
            transport = await pinned_transport(
                endpoint.url, max_response_bytes=RESPONSE_MAX_BYTES, what="The webhook endpoint"
            )
        except (Refused, ValueError) as exc:  # (ValueError: a secret that SECRET_KEY no longer decrypts)
            secret, refused = "", str(exc)  # each due delivery records why, and waits its backoff
        else:
            client, refused = pinned_client(transport, timeout=settings.WEBHOOK_TIMEOUT_SECONDS, headers={}), ""
        slots = asyncio.Semaphore(settings.WEBHOOK_MAX_IN_FLIGHT)
        while True:
            window = await in_worker(webhook_deliveries_next)(endpoint_id=endpoint.id, now=timezone.now(), limit=WINDOW)
            if not window:
                return
            failed = False
            attempts = []
            for delivery in window:
                await slots.acquire()
                if failed:  # (a later event never overtakes one that waits for its retry)
                    slots.release()
                    break

                async def attempt(delivery=delivery) -> None:
                    nonlocal failed
                    try:
                        if not await _attempt(endpoint, client, secret, delivery, refused=refused):
                            failed = True
                    finally:
                        slots.release()

                attempts.append(asyncio.create_task(attempt()))
            # Every attempt settled (one that raised included) before the next window or the lease's release.
            for outcome in await asyncio.gather(*attempts, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
            if failed:
                return
    except Exception:
        logger.exception("Sending the webhooks of %s failed", endpoint.id)
    finally:
        renewing.cancel()
        if client is not None:
            await client.aclose()
        if _sending.get(endpoint.id) is asyncio.current_task():  # (else a newer task of this process has it)
            await in_worker(webhook_endpoint_release)(endpoint.id)


async def _lease_kept(endpoint_id: str) -> None:
    while True:
        await asyncio.sleep(_lease_seconds() / 3)
        try:
            await in_worker(webhook_endpoint_lease)(endpoint_id, seconds=_lease_seconds())
        except Exception:  # the database may be briefly unreachable: the next renewal may pass
            logger.warning("Renewing the webhook lease of %s failed", endpoint_id, exc_info=True)


async def _attempt(endpoint, client, secret: str, delivery: WebhookDelivery, *, refused: str) -> bool:
    """One attempt of the delivery, recorded; True if it was delivered."""
    at, started = timezone.now(), time.monotonic()
    status_code, error = None, refused
    if client is not None:
        body = delivery.body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Parley-Webhooks/1"}
        headers.update(signed_headers(secret, message_id=delivery.event_id, body=body))
        try:
            async with asyncio.timeout(settings.WEBHOOK_TIMEOUT_SECONDS):
                answer = await client.post(endpoint.url, content=body, headers=headers)
                await answer.aread()
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
    delivery = await in_worker(webhook_attempt_record)(
        delivery=delivery, at=at, status_code=status_code, error=error, duration_ms=duration_ms
    )
    return delivery.status == "delivered"


async def webhooks_send_forever() -> None:
    """Every WEBHOOK_POLL_SECONDS, or at once when this process commits an event, until it drains
    (another process, or this one's next start, sends what is left)."""
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()

    def listener() -> None:
        loop.call_soon_threadsafe(wake.set)

    webhook_listener_add(listener)
    try:
        while not draining():
            try:
                await webhooks_send_due()
            except Exception:  # the database may be briefly unreachable: try again next time
                logger.exception("Sending webhooks failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), settings.WEBHOOK_POLL_SECONDS)
            wake.clear()
    finally:
        webhook_listener_remove(listener)
