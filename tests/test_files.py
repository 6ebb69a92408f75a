"""The conversation file space: uploads, downloads, deletion, limits, names, sniffing and extraction."""

from __future__ import annotations

import hashlib
import os
import time
from urllib.parse import quote

import pytest

from conversations.models import Conversation
from files import extraction
from files.models import File, Passage
from tests.file_factories import (
    docx_bytes,
    encrypted_pdf_bytes,
    multipart,
    pdf_bytes,
    pdf_with_a_slow_page,
    stored_files,
    upload,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def download(ctx, conversation, file_ref):
    return ctx.client.get(f"{ctx.conversation_url(conversation)}/files/download/", {"file_ref": file_ref})


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.mark.parametrize("size", [1, 10 * 1024 * 1024])
def test_it_round_trips_the_exact_bytes(owner, media, size):
    conversation = owner.conversation()
    content = os.urandom(size)
    response = upload(owner, conversation, [("blob.bin", content)])
    assert response.status_code == 201, response.content
    (item,) = response.json()["items"]
    assert item["size"] == size
    assert item["sha256"] == hashlib.sha256(content).hexdigest()
    assert item["name"] == "blob.bin"
    assert item["origin"] == "upload"
    got = download(owner, conversation, item["file_ref"])
    assert got.status_code == 200
    assert body_of(got) == content
    assert got["Content-Type"] == item["content_type"]
    assert got["Content-Length"] == str(size)
    # the storage key is generated: tenant/conversation/random, never the client's name
    row = File.objects.get(id=item["file_ref"])
    tenant_id, conversation_id, random_part = row.storage_key.split("/")
    assert (tenant_id, conversation_id) == (owner.tenant.id, conversation.id)
    assert "blob" not in random_part
    assert (media / row.storage_key).read_bytes() == content


def test_it_uploads_several_files_in_one_request(owner):
    conversation = owner.conversation()
    parts = [("a.txt", b"alpha text"), ("b.csv", b"x,y\n1,2\n"), ("c.json", b'{"k": "v"}')]
    response = upload(owner, conversation, parts)
    assert response.status_code == 201
    items = response.json()["items"]
    assert [i["name"] for i in items] == ["a.txt", "b.csv", "c.json"]
    assert [i["content_type"] for i in items] == ["text/plain", "text/csv", "application/json"]
    for item, (_, content) in zip(items, parts, strict=True):
        assert body_of(download(owner, conversation, item["file_ref"])) == content
    listing = owner.client.get(f"{owner.conversation_url(conversation)}/files", {"limit": 2}).json()
    assert len(listing["items"]) == 2 and listing["next"]
    rest = owner.client.get(f"{owner.conversation_url(conversation)}/files", {"next": listing["next"]}).json()
    names = {i["name"] for i in listing["items"] + rest["items"]}
    assert names == {"a.txt", "b.csv", "c.json"} and rest["next"] is None


def test_download_sends_an_rfc6266_content_disposition(owner):
    conversation = owner.conversation()
    name = 'Rapport "été" 2024.txt'
    item = upload(owner, conversation, [(name, b"bonjour")]).json()["items"][0]
    response = download(owner, conversation, item["file_ref"])
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="Rapport _')
    assert f"filename*=UTF-8''{quote(name)}" in disposition
    assert response["Content-Type"] == "text/plain"


def test_download_without_file_ref_is_400(owner):
    conversation = owner.conversation()
    response = owner.client.get(f"{owner.conversation_url(conversation)}/files/download/")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "file_ref" in response.json()["error"]["message"]


def test_unknown_file_ref_is_404(owner):
    conversation = owner.conversation()
    assert download(owner, conversation, "file_nope").status_code == 404
    response = owner.client.delete(f"{owner.conversation_url(conversation)}/files/file_nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_file_of_another_conversation_is_404(owner):
    first, second = owner.conversation(), owner.conversation()
    item = upload(owner, first, [("a.txt", b"hello")]).json()["items"][0]
    assert download(owner, second, item["file_ref"]).status_code == 404
    assert owner.client.delete(f"{owner.conversation_url(second)}/files/{item['file_ref']}").status_code == 404
    assert File.objects.filter(id=item["file_ref"]).exists()


def test_delete_removes_the_row_passages_and_bytes_after_commit(owner, media, django_capture_on_commit_callbacks):
    conversation = owner.conversation()
    item = upload(owner, conversation, [("notes.txt", b"Some words worth indexing.")]).json()["items"][0]
    assert len(stored_files(media)) == 1
    assert Passage.objects.filter(file_id=item["file_ref"]).exists()
    url = f"{owner.conversation_url(conversation)}/files/{item['file_ref']}"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = owner.client.delete(url)
    assert response.status_code == 200 and response.json()["file_ref"] == item["file_ref"]
    assert len(stored_files(media)) == 1  # not before the commit
    for callback in callbacks:
        callback()
    assert stored_files(media) == []
    assert not File.objects.filter(id=item["file_ref"]).exists()
    assert not Passage.objects.filter(file_id=item["file_ref"]).exists()
    assert download(owner, conversation, item["file_ref"]).status_code == 404


def test_deleting_the_conversation_removes_its_files_bytes(owner, media, django_capture_on_commit_callbacks):
    doomed, kept = owner.conversation(), owner.conversation()
    upload(owner, doomed, [("a.txt", b"one"), ("b.txt", b"two")])
    kept_item = upload(owner, kept, [("c.txt", b"three")]).json()["items"][0]
    assert len(stored_files(media)) == 3
    with django_capture_on_commit_callbacks(execute=True):
        assert owner.client.delete(owner.conversation_url(doomed)).status_code == 200
    assert not Conversation.objects.filter(id=doomed.id).exists()
    assert [p.read_bytes() for p in stored_files(media)] == [b"three"]
    assert list(File.objects.values_list("id", flat=True)) == [kept_item["file_ref"]]


def test_an_empty_file_is_400_and_nothing_is_stored(owner, media):
    conversation = owner.conversation()
    response = upload(owner, conversation, [("ok.txt", b"fine"), ("empty.txt", b"")])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "empty.txt" in response.json()["error"]["message"]
    assert File.objects.count() == 0 and stored_files(media) == []


def test_a_request_without_files_is_400(owner):
    conversation = owner.conversation()
    body, content_type = multipart([("a.txt", b"x")], field="attachment")
    response = owner.client.post(f"{owner.conversation_url(conversation)}/files", data=body, content_type=content_type)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("files:")


def test_a_json_body_is_415(owner):
    conversation = owner.conversation()
    response = owner.client.post(f"{owner.conversation_url(conversation)}/files", {"files": []}, format="json")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_a_file_over_the_per_file_limit_is_413_and_nothing_is_stored(owner, media, settings):
    settings.FILE_MAX_BYTES = 1000
    conversation = owner.conversation()
    response = upload(owner, conversation, [("small.txt", b"ok"), ("big.bin", os.urandom(1001))])
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert "FILE_MAX_BYTES" in error["message"] and "big.bin" in error["message"]
    assert error["details"]["max_bytes"] == 1000
    assert File.objects.count() == 0 and stored_files(media) == []
    assert upload(owner, conversation, [("exact.bin", os.urandom(1000))]).status_code == 201


def test_too_many_files_in_one_request_is_413(owner, media, settings):
    settings.FILE_MAX_PER_REQUEST = 2
    conversation = owner.conversation()
    response = upload(owner, conversation, [("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"c")])
    assert response.status_code == 413
    assert "FILE_MAX_PER_REQUEST" in response.json()["error"]["message"]
    assert File.objects.count() == 0 and stored_files(media) == []
    assert upload(owner, conversation, [("a.txt", b"a"), ("b.txt", b"b")]).status_code == 201


def test_the_tenants_total_is_limited(owner, outsider, media, settings):
    owner.tenant.max_upload_bytes = 100
    owner.tenant.save(update_fields=["max_upload_bytes"])
    conversation = owner.conversation()
    assert upload(owner, conversation, [("a.bin", os.urandom(60))]).status_code == 201
    response = upload(owner, conversation, [("b.bin", os.urandom(30)), ("c.bin", os.urandom(30))])
    assert response.status_code == 413
    error = response.json()["error"]
    assert "TENANT_MAX_UPLOAD_BYTES" in error["message"]
    assert error["details"] == {"limit": "TENANT_MAX_UPLOAD_BYTES", "max_bytes": 100, "used_bytes": 60}
    assert File.objects.filter(tenant=owner.tenant).count() == 1 and len(stored_files(media)) == 1
    assert upload(owner, conversation, [("d.bin", os.urandom(40))]).status_code == 201
    # the setting is the default for tenants without their own limit
    settings.TENANT_MAX_UPLOAD_BYTES = 10
    response = upload(outsider, outsider.conversation(), [("e.bin", os.urandom(11))])
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("re\x00port\x01.txt", "report.txt"),
        ("\u202eevil\x7f.txt", "evil.txt"),
        ("  .hidden. ", "hidden"),
        # Quotes and line breaks come percent-escaped in a multipart name (HTML's form encoding, httpx):
        ("say %22hi%22.txt", 'say "hi".txt'),
        ("%22evil.txt", '"evil.txt'),
        ("two%0Alines.txt", "twolines.txt"),
    ],
)
def test_file_names_are_sanitised(owner, media, raw, expected):
    conversation = owner.conversation()
    response = upload(owner, conversation, [(raw, b"content")])
    assert response.status_code == 201, response.content
    item = response.json()["items"][0]
    assert item["name"] == expected
    (path,) = stored_files(media)
    assert path.is_relative_to(media) and expected not in path.name


@pytest.mark.parametrize("raw", ["\x00", "..", "/"])
def test_a_part_whose_name_is_nothing_is_no_file(owner, media, raw):
    response = upload(owner, owner.conversation(), [(raw, b"content")])
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "files: at least one file is required."
    assert stored_files(media) == []


def test_a_very_long_name_is_cut_keeping_its_extension(owner):
    conversation = owner.conversation()
    item = upload(owner, conversation, [("x" * 800 + ".txt", b"content")]).json()["items"][0]
    assert len(item["name"]) == 255 and item["name"].endswith("x.txt")


def test_a_1000_character_name_is_a_clear_400(owner, media):
    # Django caps a multipart part's headers at 1 KiB; such a name cannot be a real file's name anyway.
    response = upload(owner, owner.conversation(), [("y" * 1000 + ".txt", b"content")])
    assert response.status_code == 400
    assert "header size" in response.json()["error"]["message"]
    assert File.objects.count() == 0 and stored_files(media) == []


def test_a_fake_pdf_is_sniffed_from_its_bytes(owner):
    conversation = owner.conversation()
    items = upload(
        owner, conversation, [("notes.pdf", b"Just some plain notes."), ("blob.pdf", b"\x00\x01\x02\xff" * 64)]
    ).json()["items"]
    assert items[0]["content_type"] == "text/plain" and items[0]["extraction_status"] == "done"
    assert items[1]["content_type"] == "application/octet-stream"
    assert items[1]["extraction_status"] == "unsupported"
    assert items[1]["page_count"] is None


def test_broken_and_encrypted_pdfs_are_kept_marked_failed_and_downloadable(owner):
    conversation = owner.conversation()
    broken = b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\nthis is not a pdf body\n"
    encrypted = encrypted_pdf_bytes()
    response = upload(owner, conversation, [("broken.pdf", broken), ("locked.pdf", encrypted)])
    assert response.status_code == 201
    broken_item, locked_item = response.json()["items"]
    assert broken_item["content_type"] == locked_item["content_type"] == "application/pdf"
    assert broken_item["extraction_status"] == "failed" and broken_item["extraction_error"]
    assert locked_item["extraction_status"] == "failed" and "encrypted" in locked_item["extraction_error"]
    assert body_of(download(owner, conversation, broken_item["file_ref"])) == broken
    assert body_of(download(owner, conversation, locked_item["file_ref"])) == encrypted
    assert not Passage.objects.exists()


def test_documents_are_extracted_into_passages_with_pages(owner):
    conversation = owner.conversation()
    long_text = " ".join(f"Sentence number {i} talks about shipping containers." for i in range(60))
    parts = [
        ("report.pdf", pdf_bytes(["Cover page", "Revenue grew nine percent.", "Outlook is stable."])),
        ("memo.docx", docx_bytes(["Memo to staff", "The office moves to Lyon in May."])),
        ("page.html", b"<html><head><title>T</title><script>var secret=1;</script></head><body><p>Visible "
         b"paragraph</p></body></html>"),
        ("long.md", long_text.encode()),
    ]  # fmt: skip
    items = upload(owner, conversation, parts).json()["items"]
    pdf, memo, page, long = items
    assert pdf["content_type"] == "application/pdf" and pdf["page_count"] == 3
    assert memo["content_type"].endswith("wordprocessingml.document")
    assert page["content_type"] == "text/html" and long["content_type"] == "text/markdown"
    assert all(item["extraction_status"] == "done" for item in items)
    pdf_passages = list(Passage.objects.filter(file_id=pdf["file_ref"]).order_by("ordinal").values("page", "text"))
    assert [p["page"] for p in pdf_passages] == [1, 2, 3]
    assert "Revenue grew" in pdf_passages[1]["text"]
    assert "Lyon" in Passage.objects.get(file_id=memo["file_ref"]).text
    html_text = Passage.objects.get(file_id=page["file_ref"]).text
    assert "Visible paragraph" in html_text and "secret" not in html_text
    long_passages = list(Passage.objects.filter(file_id=long["file_ref"]).order_by("ordinal"))
    assert len(long_passages) > 3
    assert all(len(p.text) <= 800 for p in long_passages)
    assert " ".join(p.text for p in long_passages) == long_text


def test_extraction_is_bounded_in_pages_and_characters(owner, settings):
    settings.FILE_EXTRACT_MAX_PAGES = 2
    settings.FILE_EXTRACT_MAX_CHARS = 50
    conversation = owner.conversation()
    pdf, text = upload(
        owner, conversation, [("r.pdf", pdf_bytes(["one", "two", "three"])), ("t.txt", b"y" * 500)]
    ).json()["items"]
    assert pdf["page_count"] == 3
    assert sorted(Passage.objects.filter(file_id=pdf["file_ref"]).values_list("page", flat=True)) == [1, 2]
    assert sum(len(p.text) for p in Passage.objects.filter(file_id=text["file_ref"])) == 50


def test_a_page_that_takes_too_long_is_cut_off_at_the_time_limit(owner, settings, monkeypatch):
    # pypdf needs tens of seconds for this one page; the budget checked between pages never sees it end.
    settings.FILE_EXTRACT_SECONDS = 0.5
    monkeypatch.setattr(extraction, "CHILD_START_SECONDS", 1.5)
    conversation = owner.conversation()
    content = pdf_with_a_slow_page(300_000)
    started = time.monotonic()
    response = upload(owner, conversation, [("slow.pdf", content)])
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.content
    (item,) = response.json()["items"]
    assert item["extraction_status"] == "failed"
    assert item["extraction_error"] == "Extraction took longer than 0.5 s."
    assert elapsed < 6
    assert not Passage.objects.filter(file_id=item["file_ref"]).exists()
    assert body_of(download(owner, conversation, item["file_ref"])) == content  # the file itself is kept


def test_documents_are_parsed_within_the_memory_limit(owner, settings):
    settings.FILE_EXTRACT_MEMORY_MB = 1  # less than the parser needs to start
    conversation = owner.conversation()
    pdf, memo = upload(owner, conversation, [("r.pdf", pdf_bytes(["one"])), ("m.docx", docx_bytes(["Memo"]))]).json()[
        "items"
    ]
    assert pdf["extraction_status"] == memo["extraction_status"] == "failed"
    assert pdf["extraction_error"] == "Extraction needed more memory than allowed."

    settings.FILE_EXTRACT_MEMORY_MB = 1024
    (pdf,) = upload(owner, conversation, [("r.pdf", pdf_bytes(["one"]))]).json()["items"]
    assert pdf["extraction_status"] == "done"


def test_the_admin_lists_files_with_a_download_link(owner, client, django_user_model):
    conversation = owner.conversation()
    item = upload(owner, conversation, [("ledger.csv", b"a,b\n1,2\n")]).json()["items"][0]
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    page = client.get("/admin/files/file/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "ledger.csv" in html and "text/csv" in html and "done" in html
    link = f"/admin/files/file/{item['file_ref']}/download/"
    assert link in html
    got = client.get(link)
    assert got.status_code == 200 and body_of(got) == b"a,b\n1,2\n"
    client.logout()
    assert client.get(link).status_code == 302  # to the login page


def test_nul_characters_in_a_text_file_do_not_reach_the_index(owner):
    conversation = owner.conversation()
    late_nul = b"plain words. " * 1000 + b"after\x00the nul."
    response = upload(owner, conversation, [("doc.json", b'{"a": "x\\u0000y"}'), ("notes.txt", late_nul)])
    assert response.status_code == 201, response.content
    doc, notes = response.json()["items"]
    assert doc["extraction_status"] == notes["extraction_status"] == "done"
    passages = Passage.objects.filter(file_id__in=[doc["file_ref"], notes["file_ref"]])
    texts = list(passages.values_list("text", flat=True))
    assert texts and not any("\x00" in text for text in texts)
    assert any("afterthe nul." in text for text in texts)
    assert body_of(download(owner, conversation, notes["file_ref"])) == late_nul
