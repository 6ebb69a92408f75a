"""Tenants' own HTTP tools: defined over `/tools` (secrets encrypted, shown once, another tenant's are 404),
named in an agent's `options.tools`, and called by the openai engine with arguments checked against their
schema, signed (Standard Webhooks), never to a private address unless the operator allows it, within their
timeout and size cap; every failure is an error result the model reads, and the reply completes."""

import base64
import gzip
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from agents.models import HttpTool
from tests.conftest import async_client
from tests.openai_server import OpenAIServer
from tests.test_tool_calls import streamed, tool_events

pytestmark = pytest.mark.django_db(transaction=True)

LOCAL = ["127.0.0.1/32"]


class _Tool(BaseHTTPRequestHandler):
    server: "ToolServer"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.path == "/slow":
            time.sleep(2)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
            return
        if self.path in ("/gzip", "/chunked"):  # 5,000 bytes: compressed to a few, or without a length
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            if self.path == "/gzip":
                answer = gzip.compress(b"z" * 5000)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(5):
                self.wfile.write(b"3e8\r\n" + b"z" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        status, kind, answer = {
            "/fail": (500, "text/plain", b"the order database is down"),
            "/big": (200, "text/plain", b"y" * 5000),
            "/text": (200, "text/plain; charset=utf-8", b"Order A-1042 ships today."),
        }.get(self.path, (200, "application/json", json.dumps({"status": "shipped", "order": "A-1042"}).encode()))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class ToolServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Tool)
        self.received: list[dict] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def tool_server():
    server = ToolServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def llm():
    with (
        OpenAIServer() as server,
        override_settings(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test", TOOL_ALLOWED_NETWORKS=LOCAL),
    ):
        yield server


PARAMETERS = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def define(ctx, address: str, **fields):
    body = {"name": "lookup", "description": "Order status.", "parameters": PARAMETERS, "url": address, **fields}
    return ctx.client.post(f"{ctx.base}/tools", body, format="json")


def test_a_tool_is_defined_its_secrets_shown_once_and_stored_encrypted(owner, outsider):
    created = define(owner, "https://tools.example.com/orders", headers={"Authorization": "Bearer s3cret-value"})
    assert created.status_code == 201, created.json()
    tool = created.json()
    assert tool["signing_secret"].startswith("whsec_") and tool["header_names"] == ["Authorization"]
    shown = owner.client.get(f"{owner.base}/tools/{tool['id']}").json()
    assert "signing_secret" not in shown and "s3cret-value" not in json.dumps(shown)
    stored = HttpTool.objects.get(id=tool["id"])
    assert (
        "s3cret-value" not in stored.headers_encrypted and tool["signing_secret"] not in stored.signing_secret_encrypted
    )
    assert [t["id"] for t in owner.client.get(f"{owner.base}/tools").json()["items"]] == [tool["id"]]
    # Another tenant's tool is not found, for every operation.
    for method in ("get", "patch", "delete"):
        answer = getattr(outsider.client, method)(f"{outsider.base}/tools/{tool['id']}", {}, format="json")
        assert answer.status_code == 404, method
    assert outsider.client.get(f"{outsider.base}/tools").json()["items"] == []
    changed = owner.client.patch(f"{owner.base}/tools/{tool['id']}", {"timeout_seconds": 20}, format="json")
    assert changed.status_code == 200 and changed.json()["timeout_seconds"] == 20
    deleted = owner.client.delete(f"{owner.base}/tools/{tool['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == tool["id"]
    assert not HttpTool.objects.filter(id=tool["id"]).exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "run_sql"}, "name"),
        ({"name": "9lives"}, "name"),
        ({"parameters": {"type": "string"}}, "parameters"),
        ({"parameters": {"type": "object", "properties": {"q": {"type": 12}}}}, "parameters"),
        ({"url": "ftp://tools.example.com/x"}, "url"),
        ({"url": "https://user:pw@tools.example.com/x"}, "url"),
        ({"headers": {"Host": "elsewhere"}}, "headers"),
        ({"headers": {"X-Key": "a\r\nInjected: yes"}}, "headers"),
        ({"timeout_seconds": 600}, "timeout_seconds"),
        ({"secret": "mine"}, "secret"),  # a field the API does not know
        (
            {"parameters": {"type": "object", "properties": {"q": {"type": "string", "pattern": "^(a+)+$"}}}},
            "parameters",
        ),
    ],
)
def test_an_invalid_tool_is_400_naming_the_field(owner, fields, field):
    answer = define(owner, "https://tools.example.com/orders", **fields)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid"
    assert answer.json()["error"]["message"].startswith(field), answer.json()


def test_a_name_is_used_once_per_tenant_and_agents_may_name_only_their_tenants_tools(owner, outsider):
    assert define(owner, "https://tools.example.com/a").status_code == 201
    again = define(owner, "https://tools.example.com/b")
    assert again.status_code == 400 and again.json()["error"]["message"].startswith("name")
    assert define(outsider, "https://tools.example.com/a").status_code == 201  # the same name, another tenant's
    assert define(outsider, "https://tools.example.com/c", name="theirs").status_code == 201
    answer = owner.client.patch(owner.agent_url, {"options": {"tools": ["lookup", "search_files"]}}, format="json")
    assert answer.status_code == 200
    foreign = owner.client.patch(owner.agent_url, {"options": {"tools": ["theirs"]}}, format="json")
    assert foreign.status_code == 400 and "theirs" in foreign.json()["error"]["message"]
    unknown = owner.client.patch(owner.agent_url, {"options": {"tools": ["nope"]}}, format="json")
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["message"]


async def use_tool(ctx, url: str, **fields) -> dict:
    tool = (await sync_to_async(define)(ctx, url, **fields)).json()
    ctx.agent.engine, ctx.agent.model, ctx.agent.options = "openai", "tool-caller", {"tools": ["lookup"]}
    await sync_to_async(ctx.agent.save)()
    return tool


async def test_the_model_calls_the_tenants_tool_signed_and_gets_its_answer(owner, llm, tool_server):
    tool = await use_tool(owner, f"{tool_server.url}/orders", headers={"Authorization": "Bearer the-service-key"})
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "Where is order A-1042?"})
    (request,) = tool_server.received
    assert request["body"] == b'{"q":"x"}' and request["headers"]["Authorization"] == "Bearer the-service-key"
    # The receiver checks the signature with the secret it was shown once (Standard Webhooks).
    headers, key = request["headers"], base64.b64decode(tool["signing_secret"].removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["body"]
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected and abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    (_, ended) = tool_events(events)[1]
    assert ended == {"id": "call_1", "status": "ok", "content": {"status": "shipped", "order": "A-1042"},
                     "content_type": "json"}  # fmt: skip
    reply = "".join(e["data"].get("content", "") for e in events)
    assert reply == 'Tool said: {"status": "shipped", "order": "A-1042"}'  # what the model read
    assert llm.requests[0]["body"]["tools"][0]["function"]["name"] == "lookup"


@pytest.mark.parametrize(
    ("path", "fields", "result"),
    [
        ("/fail", {}, "The tool lookup answered 500: the order database is down"),
        ("/slow", {"timeout_seconds": 0.5}, "The tool lookup did not answer within 0.5 s."),
        ("/big", {"max_response_bytes": 1000}, "The tool lookup answered more than 1,000 bytes."),
        ("/redirect", {}, "The tool lookup answered a redirect (302); redirects are not followed."),
        (
            "/gzip",
            {"max_response_bytes": 1000},
            "The tool lookup answered compressed content, which was not asked for.",
        ),
        ("/chunked", {"max_response_bytes": 1000}, "The tool lookup answered more than 1,000 bytes."),
    ],
    ids=["fails", "times-out", "too-big", "redirects", "compressed", "too-big-streamed"],
)
async def test_a_failing_tool_gives_the_model_an_error_and_the_reply_completes(
    owner, llm, tool_server, path, fields, result
):
    await use_tool(owner, f"{tool_server.url}{path}", **fields)
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "Where is my order?"})
    (_, ended) = tool_events(events)[1]
    assert (ended["status"], ended["content"]) == ("error", result)
    assert events[-1]["data"] == {"done": True, "status": "completed"}
    assert [r["path"] for r in tool_server.received] == [path]  # one request: the redirect is not followed


async def test_a_private_address_is_refused_unless_the_operator_allows_it(owner, llm, tool_server):
    await use_tool(owner, f"{tool_server.url}/orders")
    conversation = await sync_to_async(owner.conversation)()
    with override_settings(TOOL_ALLOWED_NETWORKS=[]):
        events = await streamed(owner, conversation, {"content": "Where is my order?"})
    (_, ended) = tool_events(events)[1]
    assert ended["status"] == "error" and "resolves to a private or reserved address;" in ended["content"]
    assert tool_server.received == [] and events[-1]["data"]["status"] == "completed"


async def test_arguments_against_the_schema_are_checked_before_any_call(owner, llm, tool_server):
    parameters = {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]}
    await use_tool(owner, f"{tool_server.url}/orders", parameters=parameters)
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "Where is my order?"})
    (_, ended) = tool_events(events)[1]
    assert (ended["status"], ended["content"]) == (
        "error",
        "Invalid arguments for lookup: q: 'x' is not of type 'integer'",
    )
    assert tool_server.received == []


async def test_another_tenants_tool_is_not_offered_even_when_named(owner, outsider, llm, tool_server):
    await sync_to_async(define)(outsider, f"{tool_server.url}/orders")
    owner.agent.engine, owner.agent.model, owner.agent.options = "openai", "tool-caller", {"tools": ["lookup"]}
    await sync_to_async(owner.agent.save)()  # (as if named before; the API refuses a name the tenant has not)
    conversation = await sync_to_async(owner.conversation)()
    events = await streamed(owner, conversation, {"content": "Where is my order?"})
    (_, ended) = tool_events(events)[1]
    assert ended["status"] == "error" and ended["content"].startswith("Unknown tool 'lookup'")
    assert tool_server.received == []
    listed = await async_client(owner).get(f"{owner.base}/tools")
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::6810:85e5", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::127.0.0.1", False),  # IPv4-compatible (deprecated)
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo of 10.0.0.1
        ("fe80::1%eth0", False),
    ],
)
def test_only_public_addresses_are_allowed_by_default(address, allowed):
    from agents.outbound import address_allowed

    assert address_allowed(address)[0] is allowed


def self_signed(directory, host: str) -> tuple[str, str]:
    """A certificate for `host` signed by its own key (paths of the PEM certificate and key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "tool.pem", directory / "tool.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def https_tool_server(tmp_path):
    """The tool server over TLS, at https://localhost:<port>, recording the SNI name each handshake sent."""
    import socket
    import ssl

    cert, key = self_signed(tmp_path, "localhost")
    family, *_, address = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0]
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda connection, name, _: server_names.append(name)

    class Server(ToolServer):
        address_family = family

        def __init__(self):
            ThreadingHTTPServer.__init__(self, (address[0], 0), _Tool)
            self.received = []
            self.url = f"https://localhost:{self.server_address[1]}"
            self.server_names = server_names
            self.ca_bundle = cert

        def get_request(self):
            sock, client = self.socket.accept()
            return context.wrap_socket(sock, server_side=True), client

    server = Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


async def test_an_https_tool_is_reached_by_its_name_at_the_checked_address(owner, llm, https_tool_server):
    """The connection goes to the address checked once, and TLS still checks the name: the handshake sends
    it (SNI), the certificate must be valid for it, and the Host header keeps it."""
    await use_tool(owner, f"{https_tool_server.url}/text")
    conversation = await sync_to_async(owner.conversation)()
    with override_settings(TOOL_ALLOWED_NETWORKS=["127.0.0.1/32", "::1/128"]):
        untrusted = await streamed(owner, conversation, {"content": "Where is my order?"})
        with override_settings(TOOL_CA_BUNDLE=https_tool_server.ca_bundle):
            trusted = await streamed(owner, conversation, {"content": "And now?"})
    (_, refused) = tool_events(untrusted)[1]
    assert (refused["status"], refused["content"]) == ("error", "The tool lookup could not be reached (ConnectError).")
    (_, ended) = tool_events(trusted)[1]
    assert (ended["status"], ended["content"]) == ("ok", "Order A-1042 ships today.")
    (request,) = https_tool_server.received
    port = https_tool_server.url.rsplit(":", 1)[1]
    assert request["headers"]["Host"] == f"localhost:{port}" and https_tool_server.server_names[-1] == "localhost"
