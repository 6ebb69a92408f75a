"""Answers from files (the builtin engine's retrieval mode and the file tools), related documents, previews
and their signed URLs, on the filesystem and on S3 (moto's server, started here)."""

from __future__ import annotations

import datetime

import httpx
import pytest
import time_machine
from asgiref.sync import async_to_sync

from agents.engines.base import ChatMessage, Citations, TurnContext
from agents.tools import ToolContext, registry
from conversations.models import Citation, Message
from files.builtin import answer_from_files
from files.models import File
from files.selectors import file_refs_validate
from files.services import file_create_many
from tests.file_factories import pdf_bytes, upload
from turns.runtime import ConversationRef, TurnRequest, turn_start

pytestmark = pytest.mark.django_db

INVOICES = (
    b"Invoice 2024-117 was sent to Northwind on March 3. The invoice total is 1,240.00 EUR including VAT. "
    b"Payment is due within 30 days of the invoice date."
)
POLICY = (
    b"# Returns\n\nRefunds for damaged goods are issued within 14 days of the claim. "
    b"Customers keep the original packaging until the refund is confirmed."
)
REPORT_PAGES = [
    "Annual report of the Example Trading Company.",
    "The Rotterdam warehouse stores 4,500 pallets of coffee beans for the European market.",
    "Staff headcount grew to 120 employees across three offices.",
]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def library(owner):
    """A conversation with two text files and a three-page PDF."""
    conversation = owner.conversation()
    response = upload(
        owner,
        conversation,
        [("invoices.txt", INVOICES), ("policy.md", POLICY), ("report.pdf", pdf_bytes(REPORT_PAGES))],
    )
    assert response.status_code == 201
    refs = {item["name"]: item["file_ref"] for item in response.json()["items"]}
    return conversation, refs


def turn(owner, conversation_id, question, attachments=()):
    return TurnContext(
        tenant_id=owner.tenant.id,
        conversation_id=conversation_id,
        message_id=None,
        system_prompt="",
        history=[ChatMessage(role="user", content=question)],
        attachments=list(attachments),
    )


def citations_of(answer) -> list[dict]:
    (event,) = [e for e in answer.events if isinstance(e, Citations)]
    return event.items


def store_citations(owner, conversation, items) -> Message:
    """What the runtime does with a citations event."""
    message = Message.objects.create(tenant=owner.tenant, conversation=conversation, role="assistant", content="…")
    for item in items:
        Citation.objects.create(tenant=owner.tenant, message=message, **item)
    return message


def test_it_cites_the_right_file_and_page(owner, library):
    conversation, refs = library
    answer = answer_from_files(turn(owner, conversation.id, "How many pallets does the Rotterdam warehouse store?"))
    assert answer is not None
    first = citations_of(answer)[0]
    assert first["source_id"] == refs["report.pdf"] and first["page"] == 2
    assert first["source_name"] == "report.pdf"
    assert "4,500 pallets" in first["snippet"]
    assert 0 < first["relevance_score"] <= 1 and 0 < first["quality_score"] <= 1
    assert "4,500 pallets" in answer.text and "[1]" in answer.text
    assert any("report.pdf, page 2 as [1]" in step for step in answer.steps)
    assert answer.steps[0].startswith("Searching 3 indexed file(s)")


@pytest.mark.django_db(transaction=True)  # the turn runs in worker threads, on their own connections
def test_a_posted_question_returns_its_citations_as_stored(owner, library):
    conversation, refs = library
    url = f"{owner.conversation_url(conversation)}/messages"
    response = owner.client.post(url, {"content": "When are refunds for damaged goods issued?"}, format="json")
    body = response.json()
    cited = body["messages"][1]["citations"]
    assert [item["number"] for item in cited] == list(range(1, len(cited) + 1))
    assert cited[0]["source_id"] == refs["policy.md"]
    listed = owner.client.get(url).json()["items"]
    assert listed[-1]["id"] == body["current_message_id"] and listed[-1]["citations"] == cited


def test_a_turn_knows_whether_its_conversation_has_indexed_files(owner, library):
    conversation, _ = library
    unindexed = owner.conversation()
    File.objects.create(
        tenant=owner.tenant, conversation=unindexed, name="a.txt", content_type="text/plain", size=1, sha256="0" * 64,
        storage_key="unindexed-a",
    )  # fmt: skip
    for candidate, expected in ((conversation, True), (unindexed, False), (owner.conversation(), False)):
        turn = turn_start(ref=ConversationRef.of(candidate), request=TurnRequest(content="Where are the pallets?"))
        assert turn.context.has_indexed_files is expected


def test_it_cites_a_text_file(owner, library):
    conversation, refs = library
    answer = answer_from_files(turn(owner, conversation.id, "When are refunds for damaged goods issued?"))
    first = citations_of(answer)[0]
    assert first["source_id"] == refs["policy.md"] and first["page"] is None
    assert "within 14 days" in answer.text
    numbers = [item["number"] for item in citations_of(answer)]
    assert numbers == list(range(1, len(numbers) + 1))
    for number in numbers:
        assert f"[{number}]" in answer.text


def test_a_passage_with_every_term_ranks_first(owner, library):
    conversation, refs = library
    answer = answer_from_files(turn(owner, conversation.id, "invoice total"))
    items = citations_of(answer)
    assert items[0]["source_id"] == refs["invoices.txt"]
    assert items[0]["quality_score"] >= 0.6  # every term of the question is in the passage


def test_when_nothing_matches_it_says_so_without_citations(owner, library):
    conversation, _ = library
    answer = answer_from_files(turn(owner, conversation.id, "zebra migration patterns"))
    assert answer is not None
    assert answer.events == []
    assert "found nothing" in answer.text and "[1]" not in answer.text


def test_without_indexed_files_it_steps_aside(owner, library):
    empty = owner.conversation()
    assert answer_from_files(turn(owner, empty.id, "invoice total")) is None
    unreadable = owner.conversation()
    upload(owner, unreadable, [("blob.bin", b"\x00\x01\x02" * 10)])
    assert answer_from_files(turn(owner, unreadable.id, "invoice total")) is None
    assert answer_from_files(turn(owner, None, "invoice total")) is None


def test_attachments_narrow_the_search(owner, library):
    conversation, refs = library
    question = "What is the invoice total, and when are refunds issued?"
    everywhere = answer_from_files(turn(owner, conversation.id, question))
    assert {item["source_id"] for item in citations_of(everywhere)} == {refs["invoices.txt"], refs["policy.md"]}
    answer = answer_from_files(turn(owner, conversation.id, question, attachments=[refs["policy.md"]]))
    assert answer.steps[0].startswith("Searching 1 indexed file(s)")
    assert {item["source_id"] for item in citations_of(answer)} == {refs["policy.md"]}


def test_the_stateless_api_searches_the_attached_tenant_files(owner, library):
    from django.core.files.base import ContentFile

    (tenant_file,) = file_create_many(
        tenant=owner.tenant, conversation_id=None, uploads=[ContentFile(INVOICES, name="inv.txt")]
    )
    assert tenant_file.conversation_id is None and tenant_file.extraction_status == "done"
    answer = answer_from_files(turn(owner, None, "invoice total", attachments=[tenant_file.id]))
    assert citations_of(answer)[0]["source_id"] == tenant_file.id
    conversation, refs = library
    # a conversation's file is no tenant-level file
    assert answer_from_files(turn(owner, None, "invoice total", attachments=[refs["invoices.txt"]])) is None


def test_another_tenants_files_are_never_searched(owner, outsider, library):
    conversation, _ = library
    assert answer_from_files(turn(outsider, conversation.id, "invoice total")) is None


def test_file_refs_validate_names_attachments(owner, outsider, library):
    conversation, refs = library
    files = file_refs_validate(
        tenant_id=owner.tenant.id, conversation_id=conversation.id, refs=[refs["policy.md"], refs["report.pdf"]]
    )
    assert [f.id for f in files] == [refs["policy.md"], refs["report.pdf"]]
    from core.errors import Invalid

    other = owner.conversation()
    for tenant_id, conversation_id, ref in [
        (owner.tenant.id, other.id, refs["policy.md"]),
        (outsider.tenant.id, conversation.id, refs["policy.md"]),
        (owner.tenant.id, conversation.id, "file_unknown"),
    ]:
        with pytest.raises(Invalid) as raised:
            file_refs_validate(tenant_id=tenant_id, conversation_id=conversation_id, refs=[ref])
        assert raised.value.message.startswith("attachments:")
        assert "attachments" in raised.value.details


@pytest.mark.django_db(transaction=True)  # tools run on worker threads, with their own connections
def test_the_file_tools_use_the_same_retrieval(owner, library):
    conversation, refs = library
    tools = registry()
    context = ToolContext(tenant_id=owner.tenant.id, conversation_id=conversation.id, message_id=None)
    result = async_to_sync(tools["search_files"].run)(context, {"query": "Rotterdam pallets"})
    assert "[1] report.pdf" in result.text and "page 2" in result.text and "4,500 pallets" in result.text
    (event,) = result.events
    assert event.items[0]["source_id"] == refs["report.pdf"] and event.items[0]["page"] == 2
    assert tools["search_files"].openai_spec()["function"]["parameters"]["required"] == ["query"]

    page = async_to_sync(tools["read_file"].run)(context, {"file_ref": refs["report.pdf"], "page": 3})
    assert "120 employees" in page.text and "Rotterdam" not in page.text
    whole = async_to_sync(tools["read_file"].run)(context, {"file_ref": refs["invoices.txt"]})
    assert "1,240.00 EUR" in whole.text
    foreign = ToolContext(tenant_id="globex", conversation_id=conversation.id, message_id=None)
    missing = async_to_sync(tools["read_file"].run)(foreign, {"file_ref": refs["invoices.txt"]})
    assert "no file" in missing.text and "1,240" not in missing.text
    empty = async_to_sync(tools["search_files"].run)(context, {"query": ""})
    assert empty.events == [] and "non-empty" in empty.text


def test_related_documents_list_each_cited_source_once(owner, library):
    conversation, refs = library
    answer = answer_from_files(turn(owner, conversation.id, "Rotterdam warehouse pallets and the invoice total"))
    items = citations_of(answer)
    store_citations(owner, conversation, items)
    store_citations(owner, conversation, citations_of(answer_from_files(turn(owner, conversation.id, "pallets"))))
    store_citations(
        owner,
        conversation,
        [{"number": 1, "source_id": "web-1", "source_name": "Example site", "url": "https://example.com/a",
          "page": None, "snippet": "From the web", "relevance_score": 0.5, "quality_score": 0.4}],
    )  # fmt: skip
    url = f"{owner.conversation_url(conversation)}/related-documents"
    body = owner.client.get(url).json()
    cited = {item["source_id"] for item in items} | {"web-1"}
    assert {doc["source_id"] for doc in body["items"]} == cited
    assert len(body["items"]) == len(cited) and body["next"] is None
    report = next(doc for doc in body["items"] if doc["source_id"] == refs["report.pdf"])
    first = next(item for item in items if item["source_id"] == refs["report.pdf"])
    assert report["name"] == "report.pdf" and report["page"] == first["page"] == 2
    assert report["citation_number"] == first["number"]
    assert report["snippet"] == first["snippet"] and report["relevance_score"] == first["relevance_score"]
    assert report["quality_score"] == first["quality_score"]
    assert report["updated_date"] == File.objects.get(id=refs["report.pdf"]).created_at.date().isoformat()
    datetime.date.fromisoformat(report["updated_date"])
    assert report["link"].endswith(f"/files/download/?file_ref={refs['report.pdf']}")
    assert owner.client.get(report["link"]).status_code == 200
    web = next(doc for doc in body["items"] if doc["source_id"] == "web-1")
    assert web["link"] == "https://example.com/a" and web["updated_date"] is None

    page_one = owner.client.get(url, {"limit": 1}).json()
    page_two = owner.client.get(url, {"limit": 1, "next": page_one["next"]}).json()
    assert page_one["items"][0]["source_id"] != page_two["items"][0]["source_id"]
    assert owner.client.get(url, {"next": "garbage!"}).status_code == 400

    detail = owner.client.get(f"{url}/{refs['report.pdf']}").json()
    assert detail["source_id"] == refs["report.pdf"] and len(detail["citations"]) == 2
    assert [p["page"] for p in detail["passages"]] == [1, 2, 3]
    assert owner.client.get(f"{url}/file_never_cited").status_code == 404


def test_previews_give_text_or_a_signed_url(owner, anon, library):
    conversation, refs = library
    url = f"{owner.conversation_url(conversation)}/related-documents"
    text = owner.client.get(f"{url}/{refs['policy.md']}/preview").json()
    assert text["content_type"] == "text" and text["text"] == POLICY.decode()
    assert text["size"] == len(POLICY) and text["page_count"] is None and text["name"] == "policy.md"
    pdf = owner.client.get(f"{url}/{refs['report.pdf']}/preview").json()
    assert pdf["content_type"] == "pdf" and pdf["text"] is None and pdf["page_count"] == 3
    fetched = anon.get(pdf["url"])  # no API key: the signature is the credential
    assert fetched.status_code == 200
    assert b"".join(fetched.streaming_content) == pdf_bytes(REPORT_PAGES)
    assert fetched["Content-Type"] == "application/pdf"
    assert owner.client.get(f"{url}/file_unknown/preview").status_code == 404


def test_long_text_previews_stop_at_10000_characters(owner):
    conversation = owner.conversation()
    ref = upload(owner, conversation, [("long.txt", b"z" * 25_000)]).json()["items"][0]["file_ref"]
    preview = owner.client.get(f"{owner.conversation_url(conversation)}/related-documents/{ref}/preview").json()
    assert preview["text"] == "z" * 10_000 and preview["size"] == 25_000


def test_signed_urls_expire_after_15_minutes(owner, anon, library):
    conversation, refs = library
    preview_url = f"{owner.conversation_url(conversation)}/related-documents/{refs['report.pdf']}/preview"
    with time_machine.travel(datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC), tick=False):
        signed = owner.client.get(preview_url).json()["url"]
    with time_machine.travel(datetime.datetime(2030, 1, 1, 12, 14, 50, tzinfo=datetime.UTC), tick=False):
        assert anon.get(signed).status_code == 200
    with time_machine.travel(datetime.datetime(2030, 1, 1, 12, 15, 10, tzinfo=datetime.UTC), tick=False):
        response = anon.get(signed)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    assert "expired" in response.json()["error"]["message"]


def test_a_deactivated_tenants_signed_urls_stop_working(owner, anon, library):
    conversation, refs = library
    preview_url = f"{owner.conversation_url(conversation)}/related-documents/{refs['report.pdf']}/preview"
    signed = owner.client.get(preview_url).json()["url"]
    assert anon.get(signed).status_code == 200
    owner.tenant.is_active = False
    owner.tenant.save(update_fields=["is_active"])
    response = anon.get(signed)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_tampered_or_foreign_signed_urls_are_403(owner, outsider, anon, library):
    conversation, refs = library
    preview_url = f"{owner.conversation_url(conversation)}/related-documents/{refs['report.pdf']}/preview"
    signed = owner.client.get(preview_url).json()["url"]
    prefix, token = signed.rsplit("/", 1)
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in [f"{prefix}/{tampered}", f"{prefix}/{token[:10]}", f"{prefix}/x{token}"]:
        response = anon.get(bad)
        assert response.status_code == 403, bad
        assert response.json()["error"]["code"] == "forbidden"
    # the same token under another tenant's URL grants nothing there
    foreign = signed.replace(f"/tenants/{owner.tenant.id}/", f"/tenants/{outsider.tenant.id}/")
    assert anon.get(foreign).status_code == 403


def _keys(client) -> list[str]:
    return [obj["Key"] for obj in client.list_objects_v2(Bucket="parley-test").get("Contents", [])]


@pytest.mark.slow
def test_the_s3_path_round_trips_previews_and_deletes(owner, s3, media, django_capture_on_commit_callbacks):
    conversation = owner.conversation()
    report = pdf_bytes(REPORT_PAGES)
    response = upload(owner, conversation, [("report.pdf", report), ("policy.md", POLICY)])
    assert response.status_code == 201
    pdf_ref, md_ref = (item["file_ref"] for item in response.json()["items"])
    keys = _keys(s3)
    assert sorted(keys) == sorted(File.objects.values_list("storage_key", flat=True))
    assert all(key.startswith(f"{owner.tenant.id}/{conversation.id}/") for key in keys)
    assert not media.exists() or not any(media.rglob("*"))
    assert s3.get_object(Bucket="parley-test", Key=File.objects.get(id=pdf_ref).storage_key)["Body"].read() == report

    got = owner.client.get(f"{owner.conversation_url(conversation)}/files/download/", {"file_ref": pdf_ref})
    assert b"".join(got.streaming_content) == report

    url = f"{owner.conversation_url(conversation)}/related-documents"
    preview = owner.client.get(f"{url}/{pdf_ref}/preview").json()
    assert preview["url"].startswith(f"{s3.meta.endpoint_url}/parley-test/") and "Signature" in preview["url"]
    assert "Expires=" in preview["url"] or "X-Amz-Expires=900" in preview["url"]
    fetched = httpx.get(preview["url"])
    assert fetched.status_code == 200 and fetched.content == report
    assert fetched.headers["content-type"] == "application/pdf"
    assert owner.client.get(f"{url}/{md_ref}/preview").json()["text"] == POLICY.decode()

    answer = answer_from_files(turn(owner, conversation.id, "Rotterdam pallets"))
    assert citations_of(answer)[0]["source_id"] == pdf_ref

    with django_capture_on_commit_callbacks(execute=True):
        owner.client.delete(f"{owner.conversation_url(conversation)}/files/{pdf_ref}")
    assert _keys(s3) == [File.objects.get(id=md_ref).storage_key]
    with django_capture_on_commit_callbacks(execute=True):
        owner.client.delete(owner.conversation_url(conversation))
    assert _keys(s3) == []


@pytest.mark.slow
def test_an_s3_upload_over_the_limit_stores_nothing(owner, s3, settings):
    settings.FILE_MAX_BYTES = 100
    response = upload(owner, owner.conversation(), [("a.txt", b"fine"), ("b.bin", b"x" * 101)])
    assert response.status_code == 413
    assert _keys(s3) == [] and File.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_end_to_end_upload_ask_cite_and_relate(owner, anon):
    """Upload through the API, ask through the messages API (post-and-wait, builtin engine), then read the
    stored citations and the related documents."""
    conversation = owner.conversation()
    conv_url = owner.conversation_url(conversation)
    uploaded = upload(
        owner,
        conversation,
        [("invoices.txt", INVOICES), ("policy.md", POLICY), ("report.pdf", pdf_bytes(REPORT_PAGES))],
    )
    refs = {item["name"]: item["file_ref"] for item in uploaded.json()["items"]}
    response = owner.client.post(
        f"{conv_url}/messages",
        {"content": "How many pallets does the Rotterdam warehouse store?", "reasoning": True},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assistant = response.json()["messages"][1]
    assert assistant["status"] == "completed"
    assert "4,500 pallets" in assistant["content"] and "[1]" in assistant["content"]
    assert "report.pdf, page 2" in assistant["thinking"]
    (cited,) = assistant["citations"]
    assert cited["number"] == 1 and cited["source_id"] == refs["report.pdf"] and cited["page"] == 2

    stored = list(Citation.objects.filter(message_id=assistant["id"]).values("number", "source_id", "page"))
    assert stored == [{"number": 1, "source_id": refs["report.pdf"], "page": 2}]

    related = owner.client.get(f"{conv_url}/related-documents").json()["items"]
    assert [(doc["source_id"], doc["citation_number"], doc["page"]) for doc in related] == [(refs["report.pdf"], 1, 2)]
    preview = owner.client.get(f"{conv_url}/related-documents/{refs['report.pdf']}/preview").json()
    assert b"".join(anon.get(preview["url"]).streaming_content) == pdf_bytes(REPORT_PAGES)

    # attachments: only the attached file is searched; a foreign ref is 400 naming attachments
    narrowed = owner.client.post(
        f"{conv_url}/messages",
        {"content": "What is the invoice total?", "attachments": [refs["invoices.txt"]]},
        format="json",
    ).json()["messages"][1]
    assert {c["source_id"] for c in narrowed["citations"]} == {refs["invoices.txt"]}
    bad = owner.client.post(f"{conv_url}/messages", {"content": "x", "attachments": ["file_nope"]}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("attachments")
