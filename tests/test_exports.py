"""Files the agent produces: a SQL result exported as CSV, Excel or Parquet (the builtin engine's
`-- export:`, the LLM's `export_data_frame`) lands in the conversation's files with `origin: "agent"` and
the producing message, streams as a `file` event, downloads with the frame's exact data, counts against the
tenant's quota, and goes with its conversation."""

import io
import struct

import openpyxl
import pyarrow.parquet as pq
import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from files.models import File
from tests.openai_server import OpenAIServer
from tests.test_tool_calls import streamed, tool_events

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = "(VALUES ('north', 10.5, 1), ('south', 20.0, 2)) AS t(region, amount, units)"
SALES = "-- name: {name}\n{export}SELECT * FROM " + ROWS


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def download(ctx, conversation, file_ref: str) -> bytes:
    return body(ctx.client.get(f"{ctx.conversation_url(conversation)}/files/download/?file_ref={file_ref}"))


def frame_csv(ctx, conversation) -> bytes:
    url = f"{ctx.conversation_url(conversation)}/data-frames/sales"
    return body(ctx.client.get(url, {"output_format": "csv"}))


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
async def test_a_sql_result_exported_is_a_file_of_the_conversation_with_the_frames_data(owner, fmt):
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": SALES.format(name="sales", export=f"-- export: {fmt}\n")})
    message_id = events[0]["data"]["message"]["id"]
    (produced,) = [event["data"]["file"] for event in events if "file" in event["data"]]
    assert produced["name"] == f"sales.{fmt}" and events[-1]["data"]["status"] == "completed"
    listed = (await sync_to_async(owner.client.get)(f"{owner.conversation_url(conversation)}/files")).json()["items"]
    (file,) = listed
    assert (file["file_ref"], file["origin"], file["message_id"]) == (produced["file_ref"], "agent", message_id)
    data = await sync_to_async(download)(owner, conversation, produced["file_ref"])
    assert file["size"] == len(data)
    if fmt == "csv":
        assert data == await sync_to_async(frame_csv)(owner, conversation)
    elif fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
        assert table.column_names == ["region", "amount", "units"] and table.to_pylist()[1]["amount"] == 20.0
    else:
        rows = list(openpyxl.load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True))
        assert rows == [("region", "amount", "units"), ("north", 10.5, 1), ("south", 20.0, 2)]
    # It goes with its conversation.
    assert (await sync_to_async(owner.client.delete)(owner.conversation_url(conversation))).status_code == 200
    assert not await File.objects.filter(id=produced["file_ref"]).aexists()


async def test_an_unknown_format_or_a_full_quota_saves_nothing_and_says_so(owner):
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": SALES.format(name="first", export="-- export: pdf\n")})
    assert "Not exported: `pdf` is not one of csv, xlsx, parquet." in "".join(
        e["data"].get("content", "") for e in events
    )
    owner.tenant.max_upload_bytes = 10
    await sync_to_async(owner.tenant.save)()
    events = await streamed(owner, conversation, {"content": SALES.format(name="second", export="-- export: csv\n")})
    text = "".join(e["data"].get("content", "") for e in events)
    assert "The export could not be saved:" in text and events[-1]["data"]["status"] == "completed"
    assert not await File.objects.filter(conversation_id=conversation.id).aexists()


async def test_the_llm_exports_with_the_export_data_frame_tool(owner):
    conversation = await sync_to_async(owner.conversation)()
    await streamed(owner, conversation, {"content": SALES.format(name="sales", export="")})  # the frame `sales`
    owner.agent.engine, owner.agent.model = "openai", "exporter"
    await sync_to_async(owner.agent.save)()
    with (
        OpenAIServer() as llm,
        override_settings(OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-test"),
    ):
        events = await streamed(owner, conversation, {"content": "Give me the sales as a file."})
    (_, call), (_, ended) = tool_events(events)
    assert call["name"] == "export_data_frame" and ended["status"] == "ok"
    (produced,) = [event["data"]["file"] for event in events if "file" in event["data"]]
    data = await sync_to_async(download)(owner, conversation, produced["file_ref"])
    assert data == await sync_to_async(frame_csv)(owner, conversation)
    # And draws a chart with chart_data_frame.
    with (
        OpenAIServer() as llm,
        override_settings(OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="sk-test"),
    ):
        llm.exporter_call = ("chart_data_frame", '{"name": "sales", "kind": "line", "x": "units", "y": "amount"}')
        events = await streamed(owner, conversation, {"content": "And a chart of it."})
    (_, ended) = tool_events(events)[1]
    assert ended["status"] == "ok" and "sales-line.png" in ended["content"]
    (produced,) = [event["data"]["file"] for event in events if "file" in event["data"]]
    assert png_size(await sync_to_async(download)(owner, conversation, produced["file_ref"])) == (800, 500)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"  # a PNG, its header chunk first
    return struct.unpack(">II", data[16:24])


async def test_a_chart_of_a_sql_result_is_a_png_file_of_the_conversation(owner):
    conversation = await sync_to_async(owner.conversation)()
    question = SALES.format(name="sales", export="-- chart: bar x=region y=amount\n")
    events = await streamed(owner, conversation, {"content": question})
    (produced,) = [event["data"]["file"] for event in events if "file" in event["data"]]
    assert produced["name"] == "sales-bar.png"
    data = await sync_to_async(download)(owner, conversation, produced["file_ref"])
    assert png_size(data) == (800, 500)
    stored = await File.objects.aget(id=produced["file_ref"])
    assert (stored.origin, stored.content_type, stored.message_id) == (
        "agent",
        "image/png",
        events[0]["data"]["message"]["id"],
    )
    # A column the result does not have: the reply says so, and no file is made.
    events = await streamed(
        owner, conversation, {"content": SALES.format(name="other", export="-- chart: line x=region y=nope\n")}
    )
    text = "".join(e["data"].get("content", "") for e in events)
    assert "No chart: No column `nope`; the columns are region, amount, units." in text
    assert await File.objects.filter(conversation_id=conversation.id).acount() == 1
