"""Downloads answer byte ranges (206, 416) with or without the path's final slash, and a preview link shows
PDFs and images inline in the browser, sandboxed; every other type stays an attachment."""

import struct
import zlib

import pytest

from tests.file_factories import pdf_bytes, upload

pytestmark = pytest.mark.django_db

DATA = bytes(range(256)) * 4  # 1,024 bytes, each position's value known


def png_bytes() -> bytes:
    """A 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + (chunk(b"IEND", b""))
    )


def body(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def stored(owner):
    conversation = owner.conversation()
    uploaded = upload(
        owner, conversation, [("data.bin", DATA), ("pixel.png", png_bytes()), ("r.pdf", pdf_bytes(["x"]))]
    )
    refs = {item["name"]: item["file_ref"] for item in uploaded.json()["items"]}
    return conversation, refs


def test_a_range_is_answered_alone_and_one_past_the_end_is_416(owner, stored):
    conversation, refs = stored
    url = f"{owner.conversation_url(conversation)}/files/download/?file_ref={refs['data.bin']}"
    whole = owner.client.get(url)
    assert (whole.status_code, whole["Accept-Ranges"], body(whole)) == (200, "bytes", DATA)
    for asked, first, last in [("bytes=10-19", 10, 19), ("bytes=1000-", 1000, 1023), ("bytes=-5", 1019, 1023),
                               ("bytes=1020-5000", 1020, 1023), ("bytes=0-0", 0, 0)]:  # fmt: skip
        part = owner.client.get(url, headers={"Range": asked})
        assert part.status_code == 206, asked
        assert part["Content-Range"] == f"bytes {first}-{last}/1024"
        assert part["Content-Length"] == str(last - first + 1)
        assert body(part) == DATA[first : last + 1], asked
    # Several ranges, an unparsable one, or If-Range: the whole file.
    huge = "bytes=" + "9" * 5000 + "-"  # (a number Python would refuse to convert)
    for headers in [{"Range": "bytes=0-1,5-6"}, {"Range": "pages=1"}, {"Range": "bytes=5-1"},
                    {"Range": "bytes=0-9", "If-Range": '"an-etag"'}, {"Range": huge}]:  # fmt: skip
        answer = owner.client.get(url, headers=headers)
        assert (answer.status_code, body(answer)) == (200, DATA), headers
    refused = owner.client.get(url, headers={"Range": "bytes=1024-"})
    assert refused.status_code == 416 and refused["Content-Range"] == "bytes */1024"
    assert refused.json()["error"]["code"] == "range_not_satisfiable"


def test_the_download_path_works_without_its_final_slash(owner, outsider, stored):
    conversation, refs = stored
    url = f"{owner.conversation_url(conversation)}/files/download?file_ref={refs['data.bin']}"
    answer = owner.client.get(url)
    assert (answer.status_code, body(answer)) == (200, DATA)
    assert answer["Content-Disposition"].startswith("attachment;")
    outsiders = outsider.client.get(url.replace(f"/tenants/{owner.tenant.id}/", f"/tenants/{outsider.tenant.id}/"))
    assert outsiders.status_code == 404


def test_a_preview_link_shows_pdfs_and_images_inline_sandboxed_and_the_rest_as_attachments(owner, anon, stored):
    conversation, refs = stored
    related = f"{owner.conversation_url(conversation)}/related-documents"
    for name, disposition in [("pixel.png", "inline"), ("r.pdf", "inline"), ("data.bin", "attachment")]:
        signed = owner.client.get(f"{related}/{refs[name]}/preview").json()["url"]
        answer = anon.get(signed)
        assert answer.status_code == 200
        assert answer["Content-Disposition"].startswith(f'{disposition}; filename="{name}"')
        assert answer["X-Content-Type-Options"] == "nosniff"
        assert answer.get("Content-Security-Policy") == ("sandbox" if disposition == "inline" else None)
        part = anon.get(signed, headers={"Range": "bytes=0-3"})
        assert part.status_code == 206 and len(body(part)) == 4
    # The authenticated download stays an attachment, whatever the type.
    download = owner.client.get(f"{owner.conversation_url(conversation)}/files/download/?file_ref={refs['pixel.png']}")
    assert download["Content-Disposition"].startswith("attachment;")
