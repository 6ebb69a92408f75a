from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.files.base import File as DjangoFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Sum

from core.errors import Invalid, PayloadTooLarge
from files.extraction import Extraction, passages_split, text_extract
from files.models import File, Origin, Passage
from files.serializers import FileSerializer
from files.storage import (
    HEAD_BYTES,
    content_type_sniff,
    file_name_sanitize,
    human_bytes,
    storage_key_new,
    stored_bytes_delete,
    tenant_upload_limit,
)
from tenants.models import Tenant, WebhookEvent
from tenants.webhooks import webhook_events_record


def _digest(content: DjangoFile) -> tuple[str, bytes]:
    """sha256 and the first bytes; the upload handler computed them while streaming when it could."""
    if hasattr(content, "sha256") and hasattr(content, "head"):
        return content.sha256, content.head
    digest = hashlib.sha256()
    content.seek(0)
    head = content.read(HEAD_BYTES)
    digest.update(head)
    for chunk in iter(lambda: content.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest(), head


def _tenant_usage(tenant_id: str) -> int:
    return File.objects.filter(tenant_id=tenant_id).aggregate(total=Sum("size"))["total"] or 0


def _check_tenant_limit(tenant: Tenant, incoming: int) -> None:
    limit = tenant_upload_limit(tenant)
    used = _tenant_usage(tenant.id)
    if used + incoming > limit:
        raise PayloadTooLarge(
            f"files: the tenant's storage limit of {human_bytes(limit)} (TENANT_MAX_UPLOAD_BYTES) would be "
            f"exceeded ({used} bytes used, {incoming} uploaded).",
            details={"limit": "TENANT_MAX_UPLOAD_BYTES", "max_bytes": limit, "used_bytes": used},
        )


def file_create_many(
    *,
    tenant: Tenant,
    conversation_id: str | None,
    uploads: Sequence[DjangoFile],
    origin: str = Origin.UPLOAD,
    message_id: str | None = None,
) -> list[File]:
    """Store files of a conversation (or tenant-level files when conversation_id is None) and index their
    text: all of them or, on any error, none (stored bytes are removed again)."""
    if not uploads:
        raise Invalid("files: at least one file is required.", details={"files": ["This field is required."]})
    # Before any parsing: a tenant over its quota must not cost the server text extraction.
    _check_tenant_limit(tenant, sum(upload.size or 0 for upload in uploads))
    prepared = [
        file_prepare(
            tenant=tenant, conversation_id=conversation_id, upload=upload, origin=origin, message_id=message_id
        )
        for upload in uploads
    ]
    stored = files_store(prepared)
    try:
        return files_insert(tenant=tenant, prepared=prepared)
    except BaseException:
        stored_bytes_delete(stored)
        raise


@dataclass
class PreparedFile:
    """A file read, typed and its text extracted, not yet stored (files_store) nor recorded (files_insert)."""

    upload: DjangoFile
    row: File
    extraction: Extraction


def file_prepare(
    *, tenant: Tenant, conversation_id: str | None, upload: DjangoFile, origin: str, message_id: str | None
) -> PreparedFile:
    name = file_name_sanitize(upload.name or "")
    if not upload.size:
        raise Invalid(f"files: {name!r} is empty.", details={"files": [f"{name} is empty."], "name": name})
    sha256, head = _digest(upload)
    content_type = content_type_sniff(head, name)
    upload.seek(0)
    extraction = text_extract(upload, content_type)
    upload.seek(0)
    row = File(
        tenant=tenant,
        conversation_id=conversation_id,
        name=name,
        content_type=content_type,
        size=upload.size,
        sha256=sha256,
        storage_key=storage_key_new(tenant_id=tenant.id, conversation_id=conversation_id),
        origin=origin,
        message_id=message_id,
        page_count=extraction.page_count,
        extraction_status=extraction.status,
        extraction_error=extraction.error,
    )
    return PreparedFile(upload, row, extraction)


def files_store(prepared: Sequence[PreparedFile]) -> list[str]:
    """Store the files' bytes (all, or on any error none); returns their keys, for a caller whose recording
    fails to remove them again."""
    stored: list[str] = []
    try:
        for item in prepared:
            item.row.storage_key = default_storage.save(item.row.storage_key, item.upload)
            stored.append(item.row.storage_key)
    except BaseException:
        stored_bytes_delete(stored)
        raise
    return stored


@transaction.atomic
def files_insert(*, tenant: Tenant, prepared: Sequence[PreparedFile]) -> list[File]:
    """Record stored files with their passages, within the tenant's storage limit. The tenant's row is
    locked until the transaction ends (two requests cannot both pass the limit): call it last in a longer
    transaction."""
    Tenant.objects.select_for_update().filter(id=tenant.id).first()
    _check_tenant_limit(tenant, sum(item.row.size for item in prepared))
    files = File.objects.bulk_create([item.row for item in prepared])
    Passage.objects.bulk_create(
        Passage(tenant=tenant, file=item.row, ordinal=ordinal, page=page, text=text)
        for item in prepared
        for ordinal, (page, text) in enumerate(passages_split(item.extraction.pages))
    )
    webhook_events_record(
        tenant_id=tenant.id,
        event_type=WebhookEvent.FILE_EXTRACTED,
        data=lambda: [{"file": FileSerializer(file).data, "conversation_id": file.conversation_id} for file in files],
    )
    return files


@transaction.atomic
def file_delete(*, file: File) -> None:
    """Delete the row and its passages; the bytes go once the transaction has committed."""
    key = file.storage_key
    file.delete()
    transaction.on_commit(lambda: stored_bytes_delete([key]))


def file_bytes_delete_for_conversations(*, tenant_id: str, conversation_ids: Sequence[str]) -> int:
    """Call before deleting conversations, in the same transaction: their files' stored bytes are removed
    after it commits (the rows go with the conversations). Returns how many files that is."""
    keys = list(
        File.objects.filter(tenant_id=tenant_id, conversation_id__in=list(conversation_ids)).values_list(
            "storage_key", flat=True
        )
    )
    if keys:
        transaction.on_commit(lambda: stored_bytes_delete(keys))
    return len(keys)
