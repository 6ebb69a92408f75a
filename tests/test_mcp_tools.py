"""Tenants' MCP servers: registered over `/mcp-servers` (headers encrypted, another tenant's are 404), listed
through the `mcp` SDK's client against the SDK's own server (tests/mcp_server.py, a real process), named in
an agent's `options.tools` and called by the openai engine; text, JSON and image results reach the model and
the client, every failure is an error result and the reply completes, private addresses are refused unless
the operator allows them."""

import json
import subprocess
import sys
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from agents.models import McpServer
from files.models import File
from tests.mcp_server import KEY, png
from tests.openai_server import OpenAIServer
from tests.servers import BASE_DIR, free_port
from tests.test_exports import download
from tests.test_http_tools import LOCAL, define
from tests.test_tool_calls import stored_calls, streamed, tool_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def mcp_url():
    """The URL of a running tests/mcp_server.py."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.mcp_server", str(port)], cwd=BASE_DIR)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/calls", timeout=1)
            break
        except httpx.TransportError:
            assert process.poll() is None and time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.05)
    yield f"http://localhost:{port}"  # (by name: resolved once, then dialled at the checked address)
    process.terminate()
    process.wait(10)


@pytest.fixture
def llm():
    """The fake OpenAI server, and the test MCP server's loopback address allowed."""
    with (
        OpenAIServer() as server,
        override_settings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test", TOOL_ALLOWED_NETWORKS=LOCAL),
    ):
        yield server


def calls_made(mcp_url: str) -> dict[str, int]:
    return httpx.get(f"{mcp_url}/calls").json()


def register(ctx, address: str, **fields):
    body = {"name": "calc", "url": address, "headers": {"Authorization": f"Bearer {KEY}"}, **fields}
    return ctx.client.post(f"{ctx.base}/mcp-servers", body, format="json")


def test_a_server_is_registered_its_headers_stored_encrypted_and_another_tenants_is_404(owner, outsider):
    created = register(owner, "https://mcp.example.com/mcp")
    assert created.status_code == 201, created.json()
    server = created.json()
    assert server["name"] == "calc" and server["header_names"] == ["Authorization"]
    assert KEY not in json.dumps(owner.client.get(f"{owner.base}/mcp-servers/{server['id']}").json())
    assert KEY not in McpServer.objects.get(id=server["id"]).headers_encrypted
    assert [s["id"] for s in owner.client.get(f"{owner.base}/mcp-servers").json()["items"]] == [server["id"]]
    for method, path in [("get", ""), ("patch", ""), ("delete", ""), ("get", "/tools")]:
        answer = getattr(outsider.client, method)(
            f"{outsider.base}/mcp-servers/{server['id']}{path}", {}, format="json"
        )
        assert answer.status_code == 404, (method, path)
    assert outsider.client.get(f"{outsider.base}/mcp-servers").json()["items"] == []
    changed = owner.client.patch(f"{owner.base}/mcp-servers/{server['id']}", {"timeout_seconds": 20}, format="json")
    assert changed.status_code == 200 and changed.json()["timeout_seconds"] == 20
    deleted = owner.client.delete(f"{owner.base}/mcp-servers/{server['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == server["id"]
    assert not McpServer.objects.filter(id=server["id"]).exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "my__crm"}, "name"),  # `__` separates the server's name from its tools'
        ({"name": "run_sql"}, "name"),
        ({"name": "x" * 33}, "name"),
        ({"url": "ftp://mcp.example.com/mcp"}, "url"),
        ({"headers": {"Mcp-Session-Id": "mine"}}, "headers"),
        ({"headers": {"X-Key": "a\nb"}}, "headers"),
        ({"max_response_bytes": 0}, "max_response_bytes"),
        ({"description": "unknown here"}, "description"),
    ],
)
def test_an_invalid_server_is_400_naming_the_field(owner, fields, field):
    answer = register(owner, "https://mcp.example.com/mcp", **fields)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid"
    assert answer.json()["error"]["message"].startswith(field), answer.json()


def test_names_are_the_tenants_once_across_tools_and_servers_and_agents_name_them(owner, outsider):
    assert register(owner, "https://mcp.example.com/mcp").status_code == 201
    assert register(owner, "https://mcp.example.com/other").json()["error"]["message"].startswith("name")
    # An HTTP tool may not take the server's name, nor one of its tools' names, and the other way round.
    for name in ("calc", "calc__add"):
        answer = define(owner, "https://tools.example.com/x", name=name)
        assert answer.status_code == 400 and answer.json()["error"]["message"].startswith("name"), name
    assert define(owner, "https://tools.example.com/x", name="lookup").status_code == 201
    assert register(owner, "https://mcp.example.com/mcp", name="lookup").status_code == 400
    assert register(outsider, "https://mcp.example.com/mcp", name="theirs").status_code == 201
    named = owner.client.patch(owner.agent_url, {"options": {"tools": ["calc", "calc__add", "lookup"]}}, format="json")
    assert named.status_code == 200, named.json()
    for foreign in ("theirs", "theirs__add", "nope__add", "calc__"):
        answer = owner.client.patch(owner.agent_url, {"options": {"tools": [foreign]}}, format="json")
        assert answer.status_code == 400 and foreign in answer.json()["error"]["message"]


def test_the_tools_of_a_server_are_listed_as_agents_name_them(owner, mcp_url):
    server = register(owner, f"{mcp_url}/mcp").json()
    with override_settings(TOOL_ALLOWED_NETWORKS=LOCAL):
        answer = owner.client.get(f"{owner.base}/mcp-servers/{server['id']}/tools")
    assert answer.status_code == 200, answer.json()
    tools = {tool["name"]: tool for tool in answer.json()}
    assert set(tools) == {f"calc__{name}" for name in ("add", "greet", "picture", "fail", "slow", "big")}
    assert tools["calc__add"]["description"] == "Adds two integers."
    assert tools["calc__add"]["parameters"]["properties"]["a"]["type"] == "integer"
    assert tools["calc__add"]["parameters"]["required"] == ["a", "b"]


@pytest.mark.parametrize(
    ("where", "allowed", "keyed", "message"),
    [
        ("{mcp_url}/mcp", [], True, "host 'localhost' resolves to a private or reserved address;"),
        ("{mcp_url}/mcp", LOCAL, False, "The MCP server calc answered HTTP 401."),
        ("http://127.0.0.1:{closed}/mcp", LOCAL, True, "it could not be reached (ConnectError)."),
        ("{mcp_url}/old", LOCAL, True, "answered a redirect (307); redirects are not followed."),
    ],
    ids=["private", "without-its-key", "down", "redirected"],
)
def test_a_server_that_cannot_be_listed_is_502_saying_why(owner, mcp_url, where, allowed, keyed, message):
    url = where.format(mcp_url=mcp_url, closed=free_port())
    headers = {"Authorization": f"Bearer {KEY}"} if keyed else {}
    server = register(owner, url, headers=headers, timeout_seconds=3).json()
    with override_settings(TOOL_ALLOWED_NETWORKS=allowed):
        answer = owner.client.get(f"{owner.base}/mcp-servers/{server['id']}/tools")
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "bad_gateway"
    assert answer.json()["error"]["message"].startswith("The MCP server calc could not be listed: ")
    assert message in answer.json()["error"]["message"], answer.json()
    assert "127.0.0.1" not in answer.json()["error"]["message"] or "{closed}" in where


async def use_server(ctx, llm, mcp_url: str, call: tuple[str, str], tools: list[str] | None = None, **fields):
    """The agent names the server's tools (by default the one called); the model calls `call`."""
    await sync_to_async(register)(ctx, f"{mcp_url}/mcp", **fields)
    ctx.agent.engine, ctx.agent.model = "openai", "exporter"  # the fake's model that calls `llm.exporter_call`
    ctx.agent.options = {"tools": tools or [call[0]]}
    await sync_to_async(ctx.agent.save)()
    llm.exporter_call = call


async def test_the_model_calls_a_tool_of_the_server_and_gets_its_json(owner, llm, mcp_url):
    await use_server(owner, llm, mcp_url, ("calc__add", '{"a": 2, "b": 3}'))
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "What is 2 + 3?"})
    assert tool_events(events) == [
        ("tool_call", {"id": "call_x", "name": "calc__add", "arguments": {"a": 2, "b": 3}}),
        ("tool_result", {"id": "call_x", "status": "ok", "content": {"result": 5}, "content_type": "json"}),
    ]
    assert "".join(e["data"].get("content", "") for e in events) == "5"  # the text the server gave the model
    assert events[-1]["data"] == {"done": True, "status": "completed"}
    (offered,) = llm.requests[0]["body"]["tools"]
    assert offered["function"]["name"] == "calc__add" and offered["function"]["description"] == "Adds two integers."
    message_id = events[0]["data"]["message"]["id"]
    stored = await sync_to_async(stored_calls)(message_id)
    assert [(c["name"], c["status"], c["content"]) for c in stored] == [("calc__add", "ok", {"result": 5})]


async def test_naming_the_server_offers_all_its_tools(owner, llm, mcp_url):
    await use_server(owner, llm, mcp_url, ("calc__greet", '{"name": "Ada"}'), tools=["calc", "search_files"])
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "Greet Ada."})
    offered = {tool["function"]["name"] for tool in llm.requests[0]["body"]["tools"]}
    assert offered == {"search_files"} | {f"calc__{n}" for n in ("add", "greet", "picture", "fail", "slow", "big")}
    assert tool_events(events)[1][1]["content"] == {"result": "Hello, Ada!"}
    assert "".join(e["data"].get("content", "") for e in events) == "Hello, Ada!"


async def test_an_image_result_is_kept_as_the_agents_file_of_the_conversation(owner, llm, mcp_url):
    await use_server(owner, llm, mcp_url, ("calc__picture", "{}"))
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "Draw me something."})
    (_, ended) = tool_events(events)[1]
    (produced,) = [e["data"]["file"] for e in events if "file" in e["data"]]
    assert ended["status"] == "ok" and ended["content_type"] == "image"
    reference = {"file_ref": produced["file_ref"], "name": "calc-picture-1.png", "content_type": "image/png"}
    assert ended["content"] == reference and produced["name"] == "calc-picture-1.png"
    file = await sync_to_async(File.objects.get)(id=produced["file_ref"])
    message_id = events[0]["data"]["message"]["id"]
    assert (file.origin, file.message_id, file.conversation_id) == ("agent", message_id, conversation.id)
    assert await sync_to_async(download)(owner, conversation, file.id) == png(16, 8)


@pytest.mark.parametrize(
    ("call", "fields", "result"),
    [
        (("calc__fail", "{}"), {}, "Error executing tool fail"),
        (("calc__add", '{"a": "two"}'), {}, "Error executing tool add: "),
        (
            ("calc__slow", "{}"),
            {"timeout_seconds": 1},
            "The MCP server calc: the call of slow failed: no answer within",
        ),
        (("calc__big", "{}"), {"max_response_bytes": 50_000}, "The MCP server calc answered more than 50,000 bytes."),
        (("calc__add", '{"a": 1, "b": 2}'), {"headers": {}}, None),  # no key: the server refuses the listing
    ],
    ids=["fails", "invalid-arguments", "times-out", "too-big", "unauthorized"],
)
async def test_a_failing_call_gives_the_model_an_error_and_the_reply_completes(
    owner, llm, mcp_url, call, fields, result
):
    await use_server(owner, llm, mcp_url, call, **fields)
    conversation = await sync_to_async(owner.conversation)()
    started = time.monotonic()
    events = await streamed(owner, conversation, {"content": "Go."})
    (_, ended) = tool_events(events)[1]
    assert ended["status"] == "error"
    if result is None:  # not listed, so not offered: the model asked for a tool the agent does not have
        assert ended["content"] == f"Unknown tool {call[0]!r}: this agent has no such tool."
    else:
        assert result in ended["content"], ended
    assert events[-1]["data"] == {"done": True, "status": "completed"}
    assert time.monotonic() - started < 4.5  # the slow tool's 5 s were not waited for


async def test_a_private_address_is_refused_unless_the_operator_allows_it(owner, llm, mcp_url):
    await use_server(owner, llm, mcp_url, ("calc__add", '{"a": 1, "b": 1}'))
    before = calls_made(mcp_url).get("add", 0)
    conversation = await sync_to_async(owner.conversation)()
    with override_settings(TOOL_ALLOWED_NETWORKS=[]):
        events = await streamed(owner, conversation, {"content": "1 + 1?"})
    (_, ended) = tool_events(events)[1]
    assert ended["status"] == "error" and ended["content"].startswith("Unknown tool 'calc__add'")
    assert "tools" not in llm.requests[0]["body"] and events[-1]["data"]["status"] == "completed"
    assert calls_made(mcp_url).get("add", 0) == before
