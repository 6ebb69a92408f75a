"""Short-lived download URLs for previews: S3 presigned URLs with S3, Django-signed URLs with the filesystem."""

from __future__ import annotations

import time

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils.http import content_disposition_header

from core.errors import Forbidden
from core.tenancy import tenant_scope_enter
from files.models import File

SALT = "files.signed-download"


class SignatureRejected(Forbidden):
    default_message = "This link is invalid or has expired."


def storage_is_s3() -> bool:
    return hasattr(default_storage, "bucket_name")


def shown_inline(content_type: str) -> bool:
    """Whether a preview link shows the type in the browser: only PDFs and raster images. An uploaded HTML
    page (or SVG, which runs scripts) must not render from the bucket's origin, or this one."""
    return content_type == "application/pdf" or (content_type.startswith("image/") and content_type != "image/svg+xml")


def signed_url(*, file: File, request=None) -> str:
    """A URL that downloads the file without an API key for FILE_PREVIEW_URL_SECONDS."""
    seconds = settings.FILE_PREVIEW_URL_SECONDS
    if storage_is_s3():
        as_attachment = not shown_inline(file.content_type)
        return default_storage.url(
            file.storage_key,
            parameters={
                "ResponseContentType": file.content_type,
                "ResponseContentDisposition": content_disposition_header(as_attachment, file.name),
            },
            expire=seconds,
        )
    token = signing.dumps({"t": file.tenant_id, "f": file.id, "e": int(time.time()) + seconds}, salt=SALT)
    path = reverse("file-signed-download", kwargs={"tenant_id": file.tenant_id, "token": token})
    return request.build_absolute_uri(path) if request is not None else path


def signed_url_verify(*, tenant_id: str, token: str) -> str:
    """The file_ref a token grants; SignatureRejected when it is tampered, expired or for another tenant.

    A valid token is the request's credential, like an API key: the rest of it is scoped to its tenant."""
    try:
        payload = signing.loads(token, salt=SALT)
    except signing.BadSignature:
        raise SignatureRejected("This link's signature is invalid.") from None
    if not isinstance(payload, dict) or payload.get("t") != tenant_id or not isinstance(payload.get("f"), str):
        raise SignatureRejected("This link's signature is invalid.")
    if not isinstance(payload.get("e"), int) or payload["e"] < time.time():
        raise SignatureRejected("This link has expired.", details={"expired_at": payload.get("e")})
    tenant_scope_enter(tenant_id)
    return payload["f"]
