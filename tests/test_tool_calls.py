"""Tool calls are first-class: each call an engine makes streams as `tool_call` and `tool_result` events (ids,
order, exact resume from the stored reply), is stored as a row equal to what streamed, shows in GET messages,
and the sources a result cited show that result as `content` in the related documents. A tool that fails,
takes too long, answers too much or gets arguments that are not an object gives the model an error result,
and the reply completes."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from agents.tools import Tool, ToolResult, registry
from conversations.models import Citation, Message, ToolCall
from tests.conftest import async_client
from tests.openai_server import OpenAIServer
from tests.servers import parse_sse

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def llm():
    with (
        OpenAIServer() as server,
        override_settings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test", STREAM_LOG_TTL_SECONDS=0),
    ):
        yield server


def use_model(ctx, model: str) -> None:
    ctx.agent.engine, ctx.agent.model = "openai", model
    ctx.agent.save()


async def streamed(ctx, conversation, body: dict) -> list[dict]:
    """The SSE events of a turn posted to .../stream (the engine runs in this process)."""
    url = f"{ctx.conversation_url(conversation)}/stream"
    response = await async_client(ctx).post(url, body, content_type="application/json")
    assert response.status_code == 200
    return parse_sse(b"".join([chunk async for chunk in response.streaming_content]))


async def rejoined(ctx, conversation, message_id: str) -> list[dict]:
    """The reply's events again, rebuilt from the stored message (the live log has expired)."""
    url = f"{ctx.conversation_url(conversation)}/messages/{message_id}/stream"
    response = await async_client(ctx).get(url, {"after": -1})
    return parse_sse(b"".join([chunk async for chunk in response.streaming_content]))


def tool_events(events: list[dict]) -> list[tuple[str, dict]]:
    return [
        (kind, event["data"][kind])
        for event in events
        for kind in ("tool_call", "tool_result")
        if kind in event["data"]
    ]


def stored_calls(message_id: str) -> list[dict]:
    return [
        {"id": c.call_id, "name": c.name, "arguments": c.arguments, "status": c.status, "content": c.content,
         "content_type": c.content_type}
        for c in ToolCall.objects.filter(message_id=message_id).order_by("position")
    ]  # fmt: skip


def calls_of_stream(events: list[dict]) -> list[dict]:
    calls: dict[str, dict] = {}
    for kind, data in tool_events(events):
        if kind == "tool_call":
            calls[data["id"]] = {**data, "status": "running", "content": None, "content_type": "text"}
        else:
            calls[data["id"]].update({key: data[key] for key in ("status", "content", "content_type")})
    return list(calls.values())


async def test_a_tool_call_streams_is_stored_as_streamed_and_replays_exactly(owner, llm):
    await sync_to_async(use_model)(owner, "tool-caller")
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "look it up"})
    kinds = [next(iter(event["data"])) for event in events]
    assert kinds[:3] == ["message", "tool_call", "tool_result"] and kinds[-2:] == ["tokens", "done"]
    message_id = events[0]["data"]["message"]["id"]
    # The model asked for a tool this agent does not have: an error result it reads, and it answers.
    assert tool_events(events) == [
        ("tool_call", {"id": "call_1", "name": "lookup", "arguments": {"q": "x"}}),
        ("tool_result", {"id": "call_1", "status": "error", "content": "Unknown tool 'lookup': this agent has no "
                         "such tool.", "content_type": "text"}),
    ]  # fmt: skip
    assert events[-1]["data"] == {"done": True, "status": "completed"}
    assert await sync_to_async(stored_calls)(message_id) == calls_of_stream(events)
    assert await rejoined(owner, conversation, message_id) == events  # the same ids and objects, from storage
    listed = await async_client(owner).get(f"{owner.conversation_url(conversation)}/messages")
    reply = listed.json()["items"][1]
    assert reply["tool_calls"] == calls_of_stream(events)
    state = await async_client(owner).get(owner.conversation_url(conversation))  # the conversation's state
    assert state.json()["messages"][message_id]["tool_calls"] == reply["tool_calls"]


async def test_the_sources_a_call_cited_show_its_result_as_related_document_content(owner, llm):
    await sync_to_async(use_model)(owner, "search-twice")
    conversation = await sync_to_async(owner.conversation)()
    policy = b"Refund policy: items may be returned within 30 days. Shipping costs are never refunded."
    uploaded = await sync_to_async(owner.client.post)(
        f"{owner.conversation_url(conversation)}/files",
        {"files": SimpleUploadedFile("policy.txt", policy)},
        format="multipart",
    )
    assert uploaded.status_code == 201
    events = await streamed(owner, conversation, {"content": "What about refunds and shipping?"})
    kinds = [next(iter(event["data"])) for event in events]
    # Each call's citations come between its call and its result.
    assert kinds[1:7] == ["tool_call", "citations", "tool_result", "tool_call", "citations", "tool_result"]
    message_id = events[0]["data"]["message"]["id"]
    citations = await sync_to_async(list)(Citation.objects.filter(message_id=message_id).order_by("number"))
    assert [c.tool_call_id for c in citations] == ["call_0", "call_1"]
    related = await async_client(owner).get(f"{owner.conversation_url(conversation)}/related-documents")
    (document,) = related.json()["items"]  # one file, cited twice: its first citation's call
    results = {data["id"]: data for kind, data in tool_events(events) if kind == "tool_result"}
    assert document["content"] == results["call_0"]["content"] and "Refund policy" in document["content"]
    assert document["content_type"] == "text"


async def test_an_older_citation_has_no_content_and_still_lists(owner):
    conversation = await sync_to_async(owner.conversation)()
    reply = await Message.objects.acreate(tenant=owner.tenant, conversation=conversation, role="assistant")
    await Citation.objects.acreate(
        tenant=owner.tenant, message=reply, number=1, source_id="https://example.com/a", source_name="A"
    )
    related = await async_client(owner).get(f"{owner.conversation_url(conversation)}/related-documents")
    (document,) = related.json()["items"]
    assert (document["content"], document["content_type"]) == (None, None)


def lookup_tool(run) -> Tool:
    return Tool(name="lookup", description="Look something up.", parameters={"type": "object"}, run=run)


async def _explode(context, arguments):
    raise RuntimeError("the lookup service is down")


async def _dawdle(context, arguments):
    await asyncio.sleep(5)
    return ToolResult("too late")


async def _flood(context, arguments):
    return ToolResult("x" * 50)


@pytest.mark.parametrize(
    ("run", "settings_", "result"),
    [
        (_explode, {}, "The tool lookup failed (RuntimeError)."),
        (_dawdle, {"TOOL_TIMEOUT_SECONDS": 0.2}, "The tool lookup took longer than 0.2 s."),
        (
            _flood,
            {"TOOL_RESULT_MAX_CHARS": 20},
            "x" * 20 + "\n[cut: the result had 50 characters; the first 20 are above]",
        ),
    ],
    ids=["fails", "times-out", "answers-too-much"],
)
async def test_a_tool_that_fails_times_out_or_floods_gives_the_model_a_result_and_the_reply_completes(
    owner, llm, monkeypatch, run, settings_, result
):
    monkeypatch.setitem(registry(), "lookup", lookup_tool(run))
    await sync_to_async(use_model)(owner, "tool-caller")
    conversation = await sync_to_async(owner.conversation)()
    with override_settings(**settings_):
        events = await streamed(owner, conversation, {"content": "look it up"})
    (_, ended) = tool_events(events)[1]
    assert (ended["status"], ended["content"]) == ("ok" if run is _flood else "error", result)
    assert events[-1]["data"] == {"done": True, "status": "completed"}
    assert "".join(e["data"].get("content", "") for e in events) == f"Tool said: {result}"  # what the model read


async def test_arguments_that_are_not_an_object_are_an_error_result(owner, llm, monkeypatch):
    called = []
    monkeypatch.setitem(registry(), "lookup", lookup_tool(lambda c, a: called.append(a)))
    llm.tool_arguments = '["not", "an", "object"]'
    await sync_to_async(use_model)(owner, "tool-caller")
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "look it up"})
    (_, call), (_, ended) = tool_events(events)
    assert call["arguments"] == '["not", "an", "object"]'  # as the model wrote them
    assert (ended["status"], ended["content"]) == ("error", "Invalid arguments for lookup: they must be a JSON object.")
    assert not called and events[-1]["data"]["status"] == "completed"


async def test_the_builtin_engines_sql_and_search_are_tool_calls(owner):
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "SELECT 42 AS answer"})
    kinds = [next(iter(event["data"])) for event in events]
    assert kinds[1:4] == ["tool_call", "tool_result", "content"] and kinds[-3:] == ["data_frame", "tokens", "done"]
    (_, call), (_, ended) = tool_events(events)
    assert call == {"id": "builtin_run_sql", "name": "run_sql", "arguments": {"query": "SELECT 42 AS answer"}}
    assert ended["status"] == "ok" and "saved as the data frame" in ended["content"]
    failed = await streamed(owner, conversation, {"content": "SELECT * FROM nowhere"})
    (_, ended) = tool_events(failed)[1]
    assert ended["status"] == "error" and failed[-1]["data"]["status"] == "completed"
    message_id = events[0]["data"]["message"]["id"]
    assert await sync_to_async(stored_calls)(message_id) == calls_of_stream(events)


async def test_nan_arguments_and_a_repeated_call_id_still_store_the_reply_as_streamed(owner, llm):
    await sync_to_async(use_model)(owner, "tool-caller")
    conversation = await sync_to_async(owner.conversation)()
    llm.tool_arguments = '{"q": NaN}'  # no JSON, and no number PostgreSQL stores
    first = await streamed(owner, conversation, {"content": "look it up"})
    (_, call), (_, ended) = tool_events(first)
    assert call["arguments"] == '{"q": NaN}' and ended["status"] == "error"
    assert first[-1]["data"]["status"] == "completed"
    # A continue: the model calls again with the same id; the stream keeps ids unique within the reply.
    more = await streamed(owner, conversation, {"continue": True})
    ids = [data["id"] for kind, data in tool_events(more) if kind == "tool_call"]
    assert ids == ["call_1", "call_1_1"] and more[-1]["data"]["status"] == "completed"  # (the earlier, then)
    message_id = first[0]["data"]["message"]["id"]
    everything = await rejoined(owner, conversation, message_id)
    assert [c["id"] for c in await sync_to_async(stored_calls)(message_id)] == ["call_1", "call_1_1"]
    assert await sync_to_async(stored_calls)(message_id) == calls_of_stream(everything)
