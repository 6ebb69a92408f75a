"""The openai engine against a local server speaking the Chat Completions streaming protocol."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from agents.engines.base import EngineFailure
from agents.engines.openai import completion_chunks
from conversations.models import Conversation, Message, TitleSource
from tests.openai_server import OpenAIServer

# Generations write from worker threads with their own connections: rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def llm():
    with (
        OpenAIServer() as server,
        override_settings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test", OPENAI_TIMEOUT_SECONDS=1.0),
    ):
        yield server


def use_model(ctx, model: str, **options):
    ctx.agent.engine, ctx.agent.model, ctx.agent.options = "openai", model, options
    ctx.agent.save()


def post(ctx, conversation, body):
    return ctx.client.post(f"{ctx.conversation_url(conversation)}/messages", body, format="json")


def test_it_streams_content_and_records_usage(owner, llm):
    use_model(owner, "echo", temperature=0.3, max_tokens=50)
    conversation = owner.conversation()
    response = post(owner, conversation, {"content": "Hello!"})
    assert response.status_code == 200, response.json()
    reply = response.json()["messages"][1]
    assert reply["content"] == "You said: Hello!."
    assert (reply["input_tokens"], reply["output_tokens"]) == (11, 7)
    request = llm.requests[-1]
    assert request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "echo" and body["stream"] is True
    assert body["temperature"] == 0.3 and body["max_tokens"] == 50
    assert body["messages"] == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hello!"},
    ]


def test_it_sends_the_active_branch_as_history(owner, llm):
    use_model(owner, "echo")
    conversation = owner.conversation()
    post(owner, conversation, {"content": "first"})
    post(owner, conversation, {"content": "second"})
    roles = [(m["role"], m["content"]) for m in llm.requests[-1]["body"]["messages"]]
    assert roles == [
        ("system", "You are helpful."),
        ("user", "first"),
        ("assistant", "You said: first."),
        ("user", "second"),
    ]


def test_history_is_trimmed_oldest_first_keeping_the_system_prompt(owner, llm):
    use_model(owner, "echo", history_tokens=130)
    conversation = owner.conversation()
    for word in ("alpha", "bravo", "charlie"):
        post(owner, conversation, {"content": word * 40})  # about 50-70 tokens each
    sent = llm.requests[-1]["body"]["messages"]
    assert sent[0] == {"role": "system", "content": "You are helpful."}
    assert sent[-1]["content"] == "charlie" * 40
    assert all("alpha" not in m["content"] for m in sent)


def test_reasoning_content_becomes_thinking_when_asked(owner, llm):
    use_model(owner, "reasoner")
    conversation = owner.conversation()
    with_reasoning = post(owner, conversation, {"content": "why?", "reasoning": True}).json()["messages"][1]
    assert with_reasoning["thinking"] == "Thinking about it."
    assert with_reasoning["content"] == "Answer."
    without = post(owner, conversation, {"content": "why?"}).json()["messages"][1]
    assert without["thinking"] == ""


def test_the_tool_loop_sends_results_back_to_the_model(owner, llm):
    use_model(owner, "tool-caller")
    conversation = owner.conversation()
    reply = post(owner, conversation, {"content": "look it up"}).json()["messages"][1]
    assert reply["status"] == "completed"
    # no tool named "lookup" exists: the model is told so, and answers from that
    unknown = "Unknown tool 'lookup': this agent has no such tool."
    assert reply["content"] == f"Tool said: {unknown}"
    second = llm.requests[-1]["body"]["messages"]
    assert second[-2]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q": "x"}'}
    assert second[-1] == {"role": "tool", "tool_call_id": "call_1", "content": unknown}
    assert reply["input_tokens"] == 22  # usage of both rounds


@pytest.mark.parametrize(
    ("model", "partial", "phrase"),
    [
        ("rate-limited", "", "429"),
        ("broken", "", "500"),
        ("stall", "Partial", "timed out"),
        ("malformed", "Half", "stream broke"),
        ("error-event", "Half", "sent an error: The server is overloaded."),
    ],
)
def test_provider_failures_store_a_failed_message_and_answer_502(owner, llm, model, partial, phrase):
    use_model(owner, model)
    conversation = owner.conversation()
    response = post(owner, conversation, {"content": "hi"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "engine_error"
    assert phrase in error["message"]
    failed = Message.objects.get(id=error["details"]["message_id"])
    assert failed.status == "failed" and failed.content == partial and phrase in failed.error

    use_model(owner, "echo")  # the conversation is usable again
    assert post(owner, conversation, {"content": "again"}).status_code == 200


async def _body(*pieces: bytes):
    for piece in pieces:
        yield piece


async def _chunks_of(*pieces: bytes) -> list[dict]:
    return [chunk async for chunk in completion_chunks(_body(*pieces))]


async def test_the_event_stream_reader_follows_the_sse_format():
    """Comments and keep-alives are skipped, an event's data lines are joined, lines end at CR, LF or CRLF
    (even split between two reads), `[DONE]` ends the stream."""
    chunks = await _chunks_of(
        b": keep-alive\r\n\r", b'\ndata: {"choices": [],\r\ndata: "usage": {"prompt_tokens": 3}}\n\n',
        b'data:{"choices": []}\r\r', b"data: [DONE]\n\n", b'data: {"after": "done"}\n\n',
    )  # fmt: skip
    assert chunks == [{"choices": [], "usage": {"prompt_tokens": 3}}, {"choices": []}]


async def test_line_separators_inside_the_text_do_not_cut_an_event():
    text = "one\u2028two\u2029three\x85four \u00e9\u4e2d"
    event = f"data: {json.dumps({'choices': [{'delta': {'content': text}}]}, ensure_ascii=False)}\n\n".encode()
    assert await _chunks_of(event[:9], event[9:], b"data: [DONE]\n\n") == [{"choices": [{"delta": {"content": text}}]}]


async def test_an_error_event_fails_the_engine_with_its_message_only():
    with pytest.raises(EngineFailure, match="^The model server sent an error: quota exceeded$"):
        await _chunks_of(b'event: error\ndata: {"message": "quota exceeded", "code": "internal-42"}\n\n')
    with pytest.raises(EngineFailure, match="^The model server sent an error.$"):
        await _chunks_of(b'data: {"error": {"type": "server_error", "param": "secret-upstream-detail"}}\n\n')
    with pytest.raises(EngineFailure) as long:
        await _chunks_of(b'data: {"error": {"message": "' + b"x" * 5000 + b'"}}\n\n')
    assert len(str(long.value)) < 300


async def test_a_blank_error_event_does_not_mark_the_next_chunk():
    assert await _chunks_of(b"event: error\n\n", b'data: {"choices": []}\n\n') == [{"choices": []}]


async def test_a_chunk_that_is_not_an_object_breaks_the_stream():
    with pytest.raises(ValueError, match="not an object"):
        await _chunks_of(b"data: 5\n\n")


def test_a_reply_with_line_separators_in_its_text_arrives_whole(owner, llm):
    use_model(owner, "separators")
    response = post(owner, owner.conversation(), {"content": "hi"})
    assert response.status_code == 200, response.json()
    assert response.json()["messages"][1]["content"] == "a\u2028b\u2029c\x85d"


def test_an_unconfigured_engine_fails_clearly(owner):
    use_model(owner, "echo")
    with override_settings(OPENAI_BASE_URL="", OPENAI_API_KEY=""):
        response = post(owner, owner.conversation(), {"content": "hi"})
    assert response.status_code == 502
    assert "OPENAI_BASE_URL" in response.json()["error"]["message"]


def test_citations_of_several_tool_calls_are_numbered_in_sequence(owner, llm):
    use_model(owner, "search-twice")
    conversation = owner.conversation()
    policy = b"Refund policy: items may be returned within 30 days. Shipping costs are never refunded."
    uploaded = owner.client.post(
        f"{owner.conversation_url(conversation)}/files",
        {"files": SimpleUploadedFile("policy.txt", policy)},
        format="multipart",
    )
    assert uploaded.status_code == 201
    reply = post(owner, conversation, {"content": "What about refunds and shipping?"}).json()["messages"][1]
    assert reply["status"] == "completed"
    numbers = [citation["number"] for citation in reply["citations"]]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) == 2
    tool_messages = [m for m in llm.requests[-1]["body"]["messages"] if m["role"] == "tool"]
    assert tool_messages[0]["content"].count("[1]") == 1 and "[2]" in tool_messages[1]["content"]


def test_the_answer_shows_the_title_the_model_proposed_as_a_read_does(owner, llm):
    use_model(owner, "echo")
    conversation = Conversation.objects.create(
        tenant=owner.tenant, agent=owner.agent, name="", title_source=TitleSource.PROPOSED
    )
    answer = post(owner, conversation, {"content": "Plan a trip to Lisbon"})
    assert answer.status_code == 200, answer.json()
    read = owner.client.get(owner.conversation_url(conversation)).json()
    assert read["name"]  # the model's proposal, stored after the reply
    assert answer.json()["conversation"]["name"] == read["name"]
    assert answer.json()["conversation"]["updated_at"] == read["updated_at"]


async def test_an_event_loop_keeps_one_client_per_server_until_shutdown(settings):
    from agents.engines.openai import openai_client, openai_clients_close

    settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = "http://127.0.0.1:9/v1", "sk-one"
    first = openai_client()
    assert openai_client() is first  # each turn reuses it: no new HTTP client, TLS context or connections
    settings.OPENAI_API_KEY = "sk-two"  # the operator's settings changed: a client for them
    second = openai_client()
    assert second is not first and second.api_key == "sk-two"

    await openai_clients_close()
    assert first.is_closed() and second.is_closed()
    assert openai_client() is not second  # a later turn on this loop gets a fresh one
