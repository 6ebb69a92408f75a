"""Where file bytes go: generated storage keys, sanitised names, content-type sniffing, and the upload
handler that streams each part to a temporary file while enforcing the per-file limits."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import unicodedata
from collections.abc import Iterable

import filetype
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from core.errors import PayloadTooLarge

logger = logging.getLogger(__name__)

NAME_MAX_CHARS = 255
HEAD_BYTES = 8192  # what the sniffer looks at (filetype reads at most this many)

# Formats without magic bytes, recognised by extension once the bytes look like text.
TEXT_EXTENSIONS = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".log": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".html": "text/html",
    ".htm": "text/html",
    ".xml": "application/xml",
}


def human_bytes(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def storage_key_new(*, tenant_id: str, conversation_id: str | None) -> str:
    """`tenant/conversation/random`: never built from anything the client named."""
    return f"{tenant_id}/{conversation_id or '_tenant'}/{secrets.token_hex(16)}"


# Browsers (the HTML form encoding) and HTTP clients such as httpx write these three as percent escapes in a
# multipart file name; nothing else is escaped there, so only they are decoded.
_MULTIPART_NAME_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n"}


def file_name_sanitize(raw: str) -> str:
    """The display name: no path parts, no control characters (NUL included), at most 255 characters."""
    name = raw or ""
    for escape, character in _MULTIPART_NAME_ESCAPES.items():
        name = name.replace(escape, character)
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split()).strip(" .")
    if not name:
        return "file"
    if len(name) > NAME_MAX_CHARS:
        stem, ext = os.path.splitext(name)
        ext = ext if len(ext) <= 16 else ""
        name = stem[: NAME_MAX_CHARS - len(ext)].rstrip(" .") + ext
    return name


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        if exc.start < len(head) - 3:
            return False
    return True


def content_type_sniff(head: bytes, name: str) -> str:
    """The content type from the first bytes; the extension only decides between text formats."""
    kind = filetype.guess(head) if head else None
    if kind is not None:
        return kind.mime
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if _looks_like_text(head):
        return TEXT_EXTENSIONS.get(os.path.splitext(name)[1].lower(), "text/plain")
    return "application/octet-stream"


def preview_kind(content_type: str) -> str:
    """The preview's coarse type: text | pdf | image | binary."""
    if content_type.startswith("text/") or content_type in {"application/json", "application/xml"}:
        return "text"
    if content_type == "application/pdf":
        return "pdf"
    if content_type.startswith("image/"):
        return "image"
    return "binary"


def tenant_upload_limit(tenant) -> int:
    return tenant.max_upload_bytes if tenant.max_upload_bytes is not None else settings.TENANT_MAX_UPLOAD_BYTES


def stored_bytes_delete(keys: Iterable[str]) -> None:
    """Remove stored bytes; a failure is logged, not raised (the rows are already gone)."""
    for key in keys:
        try:
            default_storage.delete(key)
        except Exception:  # storage outages must not fail the request that deleted the rows
            logger.exception("Could not delete stored file %s", key)


class LimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams each uploaded part to a temporary file, hashing it on the way, and stops the request with
    413 as soon as a part passes FILE_MAX_BYTES or the request carries more than FILE_MAX_PER_REQUEST."""

    def __init__(self, request=None):
        super().__init__(request)
        self.max_bytes = settings.FILE_MAX_BYTES
        self.max_files = settings.FILE_MAX_PER_REQUEST
        self.count = 0

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        self.count += 1
        if self.count > self.max_files:
            raise PayloadTooLarge(
                f"files: at most {self.max_files} files per request (FILE_MAX_PER_REQUEST).",
                details={"limit": "FILE_MAX_PER_REQUEST", "max_files": self.max_files},
            )
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        self.received = 0
        self.digest = hashlib.sha256()
        self.head = b""

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.file.close()  # removes the temporary file now rather than at garbage collection
            raise PayloadTooLarge(
                f"files: {file_name_sanitize(self.file_name)!r} is larger than the per-file limit of "
                f"{human_bytes(self.max_bytes)} (FILE_MAX_BYTES).",
                details={"limit": "FILE_MAX_BYTES", "max_bytes": self.max_bytes},
            )
        self.digest.update(raw_data)
        if len(self.head) < HEAD_BYTES:
            self.head += raw_data[: HEAD_BYTES - len(self.head)]
        return super().receive_data_chunk(raw_data, start)

    def file_complete(self, file_size):
        uploaded = super().file_complete(file_size)
        uploaded.sha256 = self.digest.hexdigest()
        uploaded.head = self.head
        return uploaded
