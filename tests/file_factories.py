"""Documents built in the tests (PDF, DOCX) and hand-made multipart bodies (the test client would strip
path parts from file names before the server could see them)."""

from __future__ import annotations

import io
import secrets
import zlib
from pathlib import Path


def pdf_bytes(pages: list[str]) -> bytes:
    """A small valid PDF with one line of Helvetica text per page."""
    streams = []
    for text in pages:
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 11 Tf 50 750 Td ({escaped}) Tj ET".encode()
        streams.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return _pdf_of_page_streams(streams)


def pdf_with_a_slow_page(strings: int) -> bytes:
    """A PDF of a few kB whose one page shows `strings` one-letter strings: pypdf needs seconds for it."""
    stream = zlib.compress(b"BT /F1 11 Tf " + b"1 0 Td (x) Tj " * strings + b"ET", 9)
    return _pdf_of_page_streams(
        [b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream"]
    )


def _pdf_of_page_streams(streams: list[bytes]) -> bytes:
    objects: list[bytes] = []
    count = len(streams)
    font_id = 3 + 2 * count
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode())
    for i, stream in enumerate(streams):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(stream)
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def encrypted_pdf_bytes() -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(pdf_bytes(["Top secret figures"]))))
    writer.encrypt(user_password="secret", owner_password="owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def multipart(parts: list[tuple[str, bytes]], field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body with one `field` part per (file name, bytes), names sent verbatim."""
    boundary = "parley" + secrets.token_hex(8)
    body = io.BytesIO()
    for name, content in parts:
        body.write(f"--{boundary}\r\n".encode())
        body.write(b'Content-Disposition: form-data; name="%s"; filename="%s"\r\n' % (field.encode(), name.encode()))
        body.write(b"Content-Type: application/octet-stream\r\n\r\n")
        body.write(content)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload(ctx, conversation, parts: list[tuple[str, bytes]]):
    body, content_type = multipart(parts)
    return ctx.client.post(f"{ctx.conversation_url(conversation)}/files", data=body, content_type=content_type)


def stored_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())
