"""Fork, export and import through the API: the round trip export -> import -> export loses nothing but ids
and times, also into another tenant; a fork copies a branch with its files and frames, independent of the
original; bad documents are 400 and leave nothing behind; another tenant's ids are 404."""

import base64
import copy
import hashlib
import io
import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile

from conversations.models import Conversation, Message, MessageStatus, ToolCall
from dataframes.models import DataFrame
from files.models import File
from tests.conftest import async_client
from tests.file_factories import stored_files

pytestmark = pytest.mark.django_db(transaction=True)

SALES = pd.DataFrame({"region": ["north", "south", "north"], "amount": [10.5, 20.0, 4.5]})
ID = re.compile(r"\b(?:conv|msg|file|df|agt)_[0-9a-z]{26}\b")
TIMES = {"created_at", "updated_at", "completed_at", "exported_at"}


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def upload(ctx, conversation, name: str, content: bytes) -> str:
    response = ctx.client.post(
        f"{ctx.conversation_url(conversation)}/files", {"files": SimpleUploadedFile(name, content)}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    return response.json()["items"][0]["file_ref"]


def post(ctx, conversation, body: dict) -> list[dict]:
    response = ctx.client.post(f"{ctx.conversation_url(conversation)}/messages", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()["messages"]


def export(ctx, conversation, **params):
    return ctx.client.get(f"{ctx.conversation_url(conversation)}/export", params)


def import_(ctx, document, agent=None):
    agent = agent or ctx.agent
    # (json.dumps writes a lone surrogate as its escape, as a client's JSON library may)
    return ctx.client.post(
        f"{ctx.base}/agents/{agent.id}/conversations/import", json.dumps(document), content_type="application/json"
    )


def replay(ctx, url: str) -> str:
    """A stream's events as text (streams need the async client)."""

    async def read() -> str:
        response = await async_client(ctx).get(url, {"after": -1})
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.streaming_content]).decode()

    return async_to_sync(read)()


def rich_conversation(ctx) -> Conversation:
    """Files (one attached and cited), a frame a reply made, a tool call naming the file, two branches,
    feedback, metadata: what an export has to carry."""
    conversation = ctx.conversation("Sales review")
    Conversation.objects.filter(pk=conversation.pk).update(user_id="user-7", metadata={"customer": "acme"})
    ref = upload(ctx, conversation, "notes.txt", b"The north region sold the most in March.\n")
    upload(ctx, conversation, "sales.csv", SALES.to_csv(index=False).encode())
    question, reply = post(ctx, conversation, {"content": "Which region sold most?", "attachments": [ref]})
    ToolCall.objects.create(
        tenant=ctx.tenant, message_id=reply["id"], call_id="call_1", position=1, name="open_file",
        arguments={"file_ref": ref}, status="ok", content={"file_ref": ref, "name": "notes.txt"}, content_type="file",
    )  # fmt: skip
    feedback = ctx.client.put(
        f"{ctx.conversation_url(conversation)}/messages/{reply['id']}/feedback",
        {"thumbs_up": False, "category": "incomplete", "comment": "Say the amount."},
        format="json",
    )
    assert feedback.status_code == 200, feedback.json()
    sql = "```sql\n-- name: by_region\nSELECT region, sum(amount) AS total FROM sales GROUP BY region\n```"
    post(ctx, conversation, {"content": sql})
    # A second branch from the first reply: the export holds the whole tree.
    post(ctx, conversation, {"content": "And in April?", "parent_id": reply["id"], "metadata": {"k": [1, 2]}})
    return Conversation.objects.get(pk=conversation.pk)


def normalised(document: dict) -> dict:
    """The document with its ids numbered by first appearance and its times dropped."""
    seen: dict[str, str] = {}

    def walk(value):
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items() if key not in TIMES}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, str):
            return ID.sub(lambda match: seen.setdefault(match[0], f"<id {len(seen)}>"), value)
        return value

    return walk(document)


def test_export_then_import_then_export_loses_nothing_also_in_another_tenant(owner, outsider):
    conversation = rich_conversation(owner)
    first = export(owner, conversation)
    assert first.status_code == 200, first.json()
    document = first.json()
    assert (document["format"], document["version"]) == ("parley.conversation", 1)
    assert len(document["messages"]) == 6 and {f["name"] for f in document["files"]} == {"notes.txt", "sales.csv"}
    assert [frame["name"] for frame in document["data_frames"]] == ["by_region"]
    rated = next(m for m in document["messages"] if m["feedback"])
    assert rated["feedback"]["category"] == "incomplete"
    assert [call["name"] for call in rated["tool_calls"]] == ["search_files", "open_file"]
    assert rated["citations"] and rated["citations"][0]["source_id"] == document["files"][0]["id"]

    imported = import_(outsider, document)
    assert imported.status_code == 201, imported.json()
    copy_id = imported.json()["id"]
    assert copy_id != conversation.id and imported.json()["agent_id"] == outsider.agent.id
    assert imported.json()["user_id"] == "user-7" and imported.json()["message_count"] == 6
    again = outsider.client.get(f"{outsider.agent_url}/conversations/{copy_id}/export").json()
    assert normalised(again) == normalised(document)
    # New ids everywhere, and every reference names the copy's own rows.
    new_files = {f["id"]: f for f in again["files"]}
    assert not set(new_files) & {f["id"] for f in document["files"]}
    assert not {m["id"] for m in again["messages"]} & {m["id"] for m in document["messages"]}
    cited = next(m for m in again["messages"] if m["feedback"])
    assert cited["citations"][0]["source_id"] in new_files
    assert cited["tool_calls"][1]["content"]["file_ref"] in new_files
    assert File.objects.filter(tenant=outsider.tenant, conversation_id=copy_id).count() == 2
    # The bytes are the copy's, served by the copy.
    notes = next(f for f in again["files"] if f["name"] == "notes.txt")
    download = outsider.client.get(
        f"{outsider.agent_url}/conversations/{copy_id}/files/download/", {"file_ref": notes["id"]}
    )
    assert b"".join(download.streaming_content) == b"The north region sold the most in March.\n"
    rows = outsider.client.get(f"{outsider.agent_url}/conversations/{copy_id}/data-frames/by_region").json()
    assert sorted(row["region"] for row in rows["rows"]) == ["north", "south"]


def test_an_imported_reply_that_was_running_is_cancelled_and_times_are_kept(owner):
    conversation = owner.conversation()
    post(owner, conversation, {"content": "Hello"})
    document = export(owner, conversation).json()
    document["messages"][1]["status"] = "in_progress"
    imported = import_(owner, document)
    assert imported.status_code == 201, imported.json()
    reply = Message.objects.get(conversation_id=imported.json()["id"], role="assistant")
    assert reply.status == MessageStatus.CANCELLED
    assert reply.created_at.isoformat().replace("+00:00", "Z") == document["messages"][1]["created_at"]


def test_a_document_made_by_hand_takes_defaults(owner):
    document = {
        "format": "parley.conversation",
        "version": 1,
        "conversation": {"name": "From elsewhere", "current_message_id": "b"},
        "messages": [
            {"id": "a", "role": "user", "content": "Our refund policy?"},
            {"id": "b", "parent_id": "a", "role": "assistant", "content": "30 days, with the receipt."},
        ],
    }
    imported = import_(owner, document)
    assert imported.status_code == 201, imported.json()
    state = imported.json()
    assert state["name"] == "From elsewhere" and state["message_count"] == 2
    reply = state["messages"][state["current_message_id"]]
    assert reply["content"] == "30 days, with the receipt." and reply["status"] == "completed"
    # The agent answers what comes next, after the imported history.
    question, answer = post(owner, Conversation.objects.get(pk=state["id"]), {"content": "And without one?"})
    assert question["parent_id"] == state["current_message_id"] and answer["status"] == "completed"


def test_markdown_is_the_active_branch_as_a_transcript(owner):
    conversation = rich_conversation(owner)
    response = export(owner, conversation, format="markdown")
    assert response.status_code == 200 and response["Content-Type"] == "text/markdown; charset=utf-8"
    asked = owner.client.get(
        f"{owner.conversation_url(conversation)}/export?format=markdown", HTTP_ACCEPT="text/markdown"
    )
    assert asked.status_code == 200 and asked.content == response.content
    assert response["Content-Disposition"] == f'attachment; filename="{conversation.id}.md"'
    text = response.content.decode()
    assert text.startswith("# Sales review\n")
    assert "## User" in text and "Which region sold most?" in text and "And in April?" in text
    assert "by_region" not in text  # (the SQL question is on the other branch)
    assert "Attached: notes.txt" in text and "Feedback: thumbs down (incomplete): Say the amount." in text
    assert "- Tool `open_file`: ok" in text and "[1] notes.txt" in text


def test_a_fork_copies_the_branch_and_its_files_independently_of_the_original(owner, media):
    conversation = rich_conversation(owner)
    first_reply = Message.objects.filter(conversation=conversation, role="assistant").order_by("created_at").first()
    other_agent = type(owner.agent).objects.create(tenant=owner.tenant, name="Second")
    forked = owner.client.post(
        f"{owner.conversation_url(conversation)}/fork",
        {"from_message_id": first_reply.id, "agent_id": other_agent.id, "title": "Fork"},
        format="json",
    )
    assert forked.status_code == 201, forked.json()
    state = forked.json()
    assert (state["agent_id"], state["name"], state["message_count"]) == (other_agent.id, "Fork", 2)
    question, reply = sorted(state["messages"].values(), key=lambda m: m["created_at"])
    assert state["current_message_id"] == reply["id"] and reply["content"] == first_reply.content
    assert reply["feedback"] is None  # (it rated the original reply)
    # Its stream replays with the fork's ids, not the original's.
    replayed = replay(
        owner, f"{owner.base}/agents/{other_agent.id}/conversations/{state['id']}/messages/{reply['id']}/stream"
    )
    assert reply["id"] in replayed and state["id"] in replayed
    assert first_reply.id not in replayed and conversation.id not in replayed
    files = {f.name: f for f in File.objects.filter(conversation_id=state["id"])}
    assert set(files) == {"notes.txt", "sales.csv"}  # the uploads; the frame was made on a later message
    assert (
        question["attachments"] == [files["notes.txt"].id]
        and reply["citations"][0]["source_id"] == files["notes.txt"].id
    )
    assert reply["tool_calls"][1]["arguments"] == {"file_ref": files["notes.txt"].id}
    assert not DataFrame.objects.filter(conversation_id=state["id"]).exists()
    # Forking the other branch carries the frame its SQL reply made.
    sql_reply = Message.objects.get(conversation=conversation, role="assistant", content__contains="`by_region`")
    whole = owner.client.post(
        f"{owner.conversation_url(conversation)}/fork", {"from_message_id": sql_reply.id}, format="json"
    )
    assert whole.status_code == 201, whole.json()
    assert whole.json()["message_count"] == 4
    assert DataFrame.objects.get(conversation_id=whole.json()["id"]).message_id == whole.json()["current_message_id"]
    # Without from_message_id, the active branch.
    active = owner.client.post(f"{owner.conversation_url(conversation)}/fork", {}, format="json").json()
    assert active["name"] == "Sales review" and active["messages"][active["current_message_id"]]["content"] == (
        Message.objects.get(pk=conversation.current_message_id).content
    )
    # Deleting the original leaves the forks whole: they have their own bytes.
    assert owner.client.delete(owner.conversation_url(conversation)).status_code == 200
    fork = Conversation.objects.get(pk=state["id"])
    download = owner.client.get(f"{owner.conversation_url(fork)}/files/download/", {"file_ref": files["notes.txt"].id})
    assert b"".join(download.streaming_content) == b"The north region sold the most in March.\n"
    assert len(stored_files(media)) == 2 + 2 + 1 + 2  # three forks' files, one frame


def test_fork_refuses_what_is_not_the_tenants_or_not_this_conversations(owner, outsider):
    conversation = owner.conversation()
    post(owner, conversation, {"content": "Hello"})
    elsewhere = owner.conversation()
    (_, other_reply) = post(owner, elsewhere, {"content": "Elsewhere"})
    url = f"{owner.conversation_url(conversation)}/fork"
    wrong_message = owner.client.post(url, {"from_message_id": other_reply["id"]}, format="json")
    assert wrong_message.status_code == 400 and wrong_message.json()["error"]["message"].startswith("from_message_id:")
    foreign_agent = owner.client.post(url, {"agent_id": outsider.agent.id}, format="json")
    assert foreign_agent.status_code == 404
    unknown = owner.client.post(url, {"from": "x"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["message"] == "from: Unknown field."
    assert outsider.client.post(url.replace(owner.tenant.id, outsider.tenant.id), {}, format="json").status_code == 404
    foreign_export = f"{outsider.base}/agents/{owner.agent.id}/conversations/{conversation.id}/export"
    assert outsider.client.get(foreign_export).status_code == 404
    assert (
        import_(
            outsider,
            {"format": "parley.conversation", "version": 1, "conversation": {}, "messages": []},
            agent=owner.agent,
        ).status_code
        == 404
    )
    empty = owner.conversation()
    assert owner.client.post(f"{owner.conversation_url(empty)}/fork", {}, format="json").status_code == 400
    assert Conversation.objects.count() == 3


def test_a_running_reply_is_not_forked(owner):
    conversation = owner.conversation()
    post(owner, conversation, {"content": "Hello"})
    running = Message.objects.create(
        tenant=owner.tenant, conversation=conversation, role="assistant", status=MessageStatus.IN_PROGRESS,
        parent=Message.objects.filter(conversation=conversation).order_by("created_at").last(),
    )  # fmt: skip
    refused = owner.client.post(
        f"{owner.conversation_url(conversation)}/fork", {"from_message_id": running.id}, format="json"
    )
    assert refused.status_code == 409


BAD_DOCUMENTS = [
    ("an unknown field", lambda d: d["conversation"].update(title="x"), "conversation.title: Unknown field."),
    ("a wrong version", lambda d: d.update(version=2), "version:"),
    ("two messages with one id", lambda d: d["messages"][1].update(id=d["messages"][0]["id"]), "messages[1].id:"),
    ("a parent listed later", lambda d: d["messages"].reverse(), "messages[0].parent_id:"),
    (
        "a current message not in it",
        lambda d: d["conversation"].update(current_message_id="nope"),
        "conversation.current_message_id:",
    ),  # fmt: skip
    ("a file without its bytes", lambda d: d["files"][0].pop("content_base64"), "files[0].content_base64:"),
    ("bytes that are not base64", lambda d: d["files"][0].update(content_base64="%%%"), "files[0].content_base64:"),
    ("bytes without the file's sha256", lambda d: d["files"][0].update(sha256="0" * 64), "files: the bytes of"),
    (
        "a frame that is not Parquet",
        lambda d: d["data_frames"][0].update(content_base64="bm90IHBhcnF1ZXQ="),
        "Not a readable Parquet",
    ),  # fmt: skip
    (
        "two frames of one name",
        lambda d: d["data_frames"].append({**d["data_frames"][0], "id": "df_other", "name": "BY_REGION"}),
        "data_frames[1].name:",
    ),  # fmt: skip
    (
        "feedback on a question",
        lambda d: d["messages"][0].update(feedback={"thumbs_up": True}),
        "messages[0].feedback:",
    ),  # fmt: skip
    (
        "a tool call given twice",
        lambda d: d["messages"][1]["tool_calls"].append(d["messages"][1]["tool_calls"][0]),
        "messages[1].tool_calls:",
    ),  # fmt: skip
    ("a wrong type", lambda d: d["messages"][0].update(input_tokens="7"), "messages[0].input_tokens:"),
    ("a blank id", lambda d: d["messages"][0].update(id=""), "messages[0].id:"),
    (
        "a text over the full-text index",
        lambda d: d["messages"][0].update(content="word " * 80_001),
        "messages[0].content:",
    ),  # fmt: skip
    (
        "a frame column named with a NUL",
        lambda d: d["data_frames"][0].update(content_base64=parquet_base64({"a\x00b": [1]})),
        "NUL",
    ),  # fmt: skip
    ("a lone surrogate", lambda d: d["messages"][0]["metadata"].update(k="\ud800"), "lone surrogates"),
]


def parquet_base64(columns: dict) -> str:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return base64.b64encode(sink.getvalue()).decode()


@pytest.mark.parametrize(
    "change,message", [case[1:] for case in BAD_DOCUMENTS], ids=[case[0] for case in BAD_DOCUMENTS]
)
def test_a_bad_document_is_400_and_leaves_nothing(owner, outsider, media, change, message):
    document = export(owner, rich_conversation(owner)).json()
    before = (Conversation.objects.count(), Message.objects.count(), File.objects.count(), DataFrame.objects.count())
    stored_before = stored_files(media)
    change(document)
    refused = import_(outsider, document)
    assert refused.status_code == 400, refused.json()
    assert refused.json()["error"]["code"] == "invalid" and message in refused.json()["error"]["message"]
    after = (Conversation.objects.count(), Message.objects.count(), File.objects.count(), DataFrame.objects.count())
    assert after == before and stored_files(media) == stored_before


def test_import_and_export_limits(owner, settings):
    conversation = owner.conversation()
    upload(owner, conversation, "big.txt", b"x" * 3000)
    settings.IMPORT_MAX_BYTES = 3000
    too_big = export(owner, conversation)
    assert too_big.status_code == 413 and too_big.json()["error"]["details"]["limit"] == "IMPORT_MAX_BYTES"
    references = export(owner, conversation, include_bytes="false")
    assert references.status_code == 200 and references.json()["files"][0]["content_base64"] is None
    body = json.dumps({"format": "parley.conversation", "padding": "x" * 4000})
    over = owner.client.post(f"{owner.agent_url}/conversations/import", body, content_type="application/json")
    assert over.status_code == 413 and over.json()["error"]["details"]["limit"] == "IMPORT_MAX_BYTES"
    # The whole document counts, not only the bytes: 2,990 bytes fit, their document does not.
    settings.IMPORT_MAX_BYTES = 4000
    exact = owner.conversation()
    upload(owner, exact, "fits.txt", b"y" * 2990)
    assert export(owner, exact).status_code == 413
    assert export(owner, conversation, format="pdf").status_code == 400
    assert export(owner, conversation, include_bytes="yes").status_code == 400


def test_an_import_larger_than_the_json_limit_of_other_bodies_is_taken(owner, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    content = bytes(range(256)) * 20
    document = {
        "format": "parley.conversation",
        "version": 1,
        "conversation": {"name": "Big"},
        "messages": [{"id": "a", "role": "user", "content": "See the file."}],
        "files": [
            {
                "id": "file_x",
                "name": "blob.bin",
                "sha256": hashlib.sha256(content).hexdigest(),
                "content_base64": base64.b64encode(content).decode(),
            }
        ],
    }
    imported = import_(owner, copy.deepcopy(document))
    assert imported.status_code == 201, imported.json()
    stored = File.objects.get(conversation_id=imported.json()["id"])
    assert (stored.size, stored.content_type) == (len(content), "application/octet-stream")
    assert io.BytesIO(content).getbuffer().nbytes == stored.size


def test_an_import_with_an_idempotency_key_happens_once(owner):
    document = {
        "format": "parley.conversation",
        "version": 1,
        "conversation": {"name": "Once"},
        "messages": [{"id": "a", "role": "user", "content": "Hi"}],
    }
    url = f"{owner.agent_url}/conversations/import"
    first = owner.client.post(url, document, format="json", HTTP_IDEMPOTENCY_KEY="import-1")
    again = owner.client.post(url, document, format="json", HTTP_IDEMPOTENCY_KEY="import-1")
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    assert Conversation.objects.filter(name="Once").count() == 1
    other = owner.client.post(url, {**document, "messages": []}, format="json", HTTP_IDEMPOTENCY_KEY="import-1")
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_times_that_disagree_with_the_tree_still_export_parents_first(owner):
    document = {
        "format": "parley.conversation",
        "version": 1,
        "conversation": {"current_message_id": "b"},
        "messages": [
            {"id": "a", "role": "user", "content": "Q", "created_at": "2025-03-02T10:00:00Z"},
            {"id": "b", "parent_id": "a", "role": "assistant", "content": "A", "created_at": "2025-03-01T10:00:00Z"},
        ],
    }
    imported = import_(owner, document).json()
    exported = export(owner, Conversation.objects.get(pk=imported["id"])).json()
    assert [m["content"] for m in exported["messages"]] == ["Q", "A"]
    assert import_(owner, exported).status_code == 201
