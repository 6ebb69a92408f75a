"""Standard Webhooks signatures (https://www.standardwebhooks.com, through its `standardwebhooks` library)
on what Parley sends to tenants' URLs: HTTP tools' calls and webhook deliveries. A receiver checks them
with any of that specification's libraries and the `whsec_` secret it was shown once."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def signing_secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signed_headers(secret: str, *, message_id: str, body: bytes, at: datetime | None = None) -> dict[str, str]:
    """The `webhook-id`, `webhook-timestamp` and `webhook-signature` headers of a body."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
    }
