"""Every API route, called with the outsider's key on the owner's objects, or the owner's key on the outsider's
objects, answers 404 in the error shape and changes nothing."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.models import Agent, HttpTool, McpServer
from conversations.models import Citation, Conversation, Feedback, Message, QueuedTurn
from dataframes.models import DataFrame
from files.models import File
from files.signing import signed_url
from tenants.models import WebhookDelivery, WebhookEndpoint
from tenants.webhooks import webhook_event_record
from tests.file_factories import upload

pytestmark = pytest.mark.django_db


def _routes(ctx, conversation):
    agent = ctx.agent_url
    conv = ctx.conversation_url(conversation)
    return [
        ("get", f"{ctx.base}/agents", None),
        ("post", f"{ctx.base}/agents", {"name": "x"}),
        ("get", agent, None),
        ("patch", agent, {"name": "stolen"}),
        ("delete", agent, None),
        ("get", f"{agent}/conversations", None),
        ("post", f"{agent}/conversations", {"name": "x"}),
        ("get", conv, None),
        ("patch", conv, {"name": "stolen"}),
        ("delete", conv, None),
        ("get", f"{conv}/messages", None),
        ("post", f"{conv}/messages", {"content": "hi"}),
        ("post", f"{conv}/messages/msg_x/cancel", None),
        ("get", f"{conv}/messages/msg_x/stream", None),
        ("post", f"{conv}/stream", {"content": "hi"}),
        ("post", f"{conv}/title", None),
        ("get", f"{conv}/messages/msg_x/feedback", None),
        ("put", f"{conv}/messages/msg_x/feedback", {"thumbs_up": True}),
        ("delete", f"{conv}/messages/msg_x/feedback", None),
        ("get", f"{ctx.base}/conversations", None),
        ("get", f"{ctx.base}/conversations/search?q=x", None),
        ("post", f"{ctx.base}/conversations/bulk-delete", {"ids": [conversation.id]}),
        ("delete", f"{ctx.base}/conversations?confirm=true", None),
    ]


def test_another_tenants_urls_are_404_with_my_key(owner, outsider):
    conversation = outsider.conversation()
    for method, url, body in _routes(outsider, conversation):
        response = getattr(owner.client, method)(url, body, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["error"]["code"] == "not_found"
    assert Agent.objects.get(id=outsider.agent.id).name == outsider.agent.name
    assert Conversation.objects.filter(id=conversation.id, name=conversation.name).exists()
    assert Agent.objects.filter(tenant=outsider.tenant).count() == 1


def test_another_tenants_ids_under_my_url_are_404(owner, outsider):
    foreign = outsider.conversation()
    foreign_reply = Message.objects.create(tenant=outsider.tenant, conversation=foreign, role="assistant", content="x")
    mine = owner.conversation()
    foreign_agent_routes = [
        ("get", f"{owner.base}/agents/{outsider.agent.id}", None),
        ("patch", f"{owner.base}/agents/{outsider.agent.id}", {"name": "stolen"}),
        ("delete", f"{owner.base}/agents/{outsider.agent.id}", None),
        ("get", f"{owner.base}/agents/{outsider.agent.id}/conversations", None),
        ("post", f"{owner.base}/agents/{outsider.agent.id}/conversations", {"name": "x"}),
        ("get", f"{owner.agent_url}/conversations/{foreign.id}", None),
        ("patch", f"{owner.agent_url}/conversations/{foreign.id}", {"name": "stolen"}),
        ("delete", f"{owner.agent_url}/conversations/{foreign.id}", None),
        ("get", f"{owner.base}/agents/{outsider.agent.id}/conversations/{foreign.id}", None),
        ("get", f"{owner.agent_url}/conversations/{foreign.id}/messages", None),
        ("post", f"{owner.agent_url}/conversations/{foreign.id}/messages", {"content": "hi"}),
        ("post", f"{owner.agent_url}/conversations/{foreign.id}/messages/{foreign_reply.id}/cancel", None),
        ("get", f"{owner.agent_url}/conversations/{foreign.id}/messages/{foreign_reply.id}/stream", None),
        ("post", f"{owner.agent_url}/conversations/{foreign.id}/stream", {"content": "hi"}),
        ("post", f"{owner.agent_url}/conversations/{foreign.id}/title", None),
        (
            "put",
            f"{owner.agent_url}/conversations/{foreign.id}/messages/{foreign_reply.id}/feedback",
            {"thumbs_up": True},
        ),
        ("get", f"{owner.base}/conversations?agent_id={outsider.agent.id}", None),
        ("get", f"{owner.base}/conversations/search?q=x&agent_id={outsider.agent.id}", None),
    ]
    for method, url, body in foreign_agent_routes:
        response = getattr(owner.client, method)(url, body, format="json")
        assert response.status_code == 404, (method, url)
    assert Conversation.objects.filter(id=foreign.id, name=foreign.name).exists()
    assert Conversation.objects.filter(id=mine.id).exists()
    assert Message.objects.filter(conversation=foreign).count() == 1
    # bulk delete with a foreign id reports it as not found and deletes nothing of the outsider's
    response = owner.client.post(f"{owner.base}/conversations/bulk-delete", {"ids": [foreign.id]}, format="json")
    assert response.json() == {"deleted": 0, "failed": [foreign.id]}
    assert Conversation.objects.filter(id=foreign.id).exists()


def test_every_route_without_a_key_is_401(owner, anon):
    conversation = owner.conversation()
    for method, url, body in _routes(owner, conversation):
        response = getattr(anon, method)(url, body, format="json")
        assert response.status_code == 401, (method, url)


@pytest.fixture
def owners_objects(owner, settings, tmp_path):
    """One of each object the owner can have, each referenced by its route's path parameter."""
    settings.MEDIA_ROOT = tmp_path / "media"
    conversation = owner.conversation()
    file_ref = upload(owner, conversation, [("secret.txt", b"Quarterly secret numbers.")]).json()["items"][0][
        "file_ref"
    ]
    tenant_file = owner.client.post(
        "/v1/files", {"files": SimpleUploadedFile("t.txt", b"tenant level")}, format="multipart"
    )
    question = Message.objects.create(tenant=owner.tenant, conversation=conversation, role="user", content="q")
    reply = Message.objects.create(
        tenant=owner.tenant, conversation=conversation, role="assistant", content="secret answer", parent=question
    )
    Citation.objects.create(tenant=owner.tenant, message=reply, number=1, source_id=file_ref, snippet="s")
    Feedback.objects.create(tenant=owner.tenant, message=reply, thumbs_up=True)
    frame = DataFrame.objects.create(tenant=owner.tenant, conversation=conversation, name="sales", storage_key="k")
    token = signed_url(file=File.objects.get(id=file_ref)).rstrip("/").rsplit("/", 1)[-1]
    tool = owner.client.post(
        f"{owner.base}/tools",
        {"name": "owners_tool", "description": "d", "url": "https://tools.example.com/x",
         "headers": {"X-Key": "owners-tool-header-value"}},
        format="json",
    ).json()  # fmt: skip
    server = owner.client.post(
        f"{owner.base}/mcp-servers",
        {"name": "owners_mcp", "url": "https://mcp.example.com/mcp", "headers": {"X-Key": "owners-mcp-header-value"}},
        format="json",
    ).json()
    webhook = owner.client.post(
        f"{owner.base}/webhooks", {"url": "https://hooks.example.com/x", "events": ["message.completed"]}, format="json"
    ).json()
    webhook_event_record(tenant_id=owner.tenant.id, event_type="message.completed", data=lambda: {"n": 1})
    queued = QueuedTurn.objects.create(
        tenant=owner.tenant, conversation=conversation, request={"content": "q"}, status="cancelled"
    )
    return {
        "queued_turn_id": queued.id,
        "webhook_id": webhook["id"],
        "webhook_secret": webhook["secret"],
        "delivery_id": WebhookDelivery.objects.get(endpoint_id=webhook["id"]).id,
        "tool_id": tool["id"],
        "server_id": server["id"],
        "mcp_header_value": "owners-mcp-header-value",
        "tool_signing_secret": tool["signing_secret"],
        "tool_header_value": "owners-tool-header-value",
        "agent_id": owner.agent.id,
        "conversation_id": conversation.id,
        "message_id": reply.id,
        "file_ref": file_ref,
        "source_id": file_ref,
        "data_frame_name": frame.name,
        "token": token,
        "tenant_file_ref": tenant_file.json()["files"][0]["file_ref"],
    }


def _request_body(operation: dict, ids: dict):
    """The operation's documented example (naming the owner's objects where it names any), or a file."""
    content = operation.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        return {"files": SimpleUploadedFile("x.txt", b"intruder")}, "multipart"
    if "application/json" not in content:
        return None, "json"
    examples = content["application/json"].get("examples", {})
    body = next(iter(examples.values()))["value"] if examples else {}
    if "ids" in body:
        body = {**body, "ids": [ids["conversation_id"]]}
    if "agent_id" in body:
        body = {**body, "agent_id": ids["agent_id"]}
    return body, "json"


def test_every_route_of_the_schema_keeps_another_tenants_objects_out_of_reach(owner, outsider, owners_objects, anon):
    """Each operation the API documents (REST, SSE, signed URLs, /v1), called with the outsider's key and
    the owner's ids, is 404 (a signed link, 403), answers nothing of the owner's, and changes nothing."""
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    ids = owners_objects
    secrets_of_owner = {value for name, value in ids.items() if name != "data_frame_name"} | {"secret answer"}
    models = (Conversation, Message, File, HttpTool, McpServer, WebhookEndpoint, WebhookDelivery)
    rows_before = {model: model.objects.filter(tenant=owner.tenant).count() for model in models}
    checked = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path == "/healthz":
                continue
            names = re.findall(r"{(\w+)}", path)
            values = {**ids, "tenant_id": outsider.tenant.id}
            if path.startswith("/v1/"):
                values["file_ref"] = ids["tenant_file_ref"]
            url = path.format(**values)
            query = {"file_ref": ids["file_ref"], "q": "secret", "confirm": "true"}
            query = {
                p["name"]: query[p["name"]]
                for p in operation.get("parameters", [])
                if p["in"] == "query" and p.get("required")
            }
            body, body_format = _request_body(operation, ids)
            client = anon if "token" in names else outsider.client
            if query:
                url += "?" + "&".join(f"{key}={value}" for key, value in query.items())
            response = getattr(client, method)(url, body, format=body_format)
            text = response.content.decode(errors="replace") if not response.streaming else ""
            sent = url + repr(body)  # an answer may name what it was asked about
            leaked = sorted(secret for secret in secrets_of_owner if secret in text and secret not in sent)
            assert not leaked, (method, url, leaked)
            names_owners_object = (
                bool(set(names) - {"tenant_id"})
                or "file_ref" in query
                or (isinstance(body, dict) and "agent_id" in body)
            )
            if "token" in names:
                assert response.status_code == 403, (method, url, response.status_code)
            elif names_owners_object:
                assert response.status_code == 404, (method, url, response.status_code, text[:300])
            checked.append(f"{method.upper()} {path}")
    assert len(checked) >= 36
    assert {model: model.objects.filter(tenant=owner.tenant).count() for model in rows_before} == rows_before
    assert Message.objects.get(id=ids["message_id"]).content == "secret answer"


def test_every_json_body_refuses_a_field_it_does_not_know(owner, owners_objects, anon):
    """Each operation that reads a JSON body, sent its documented example plus a misspelt field, answers
    400 naming that field and changes nothing: a field the API does not know is never silently ignored."""
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    rows_before = {model: model.objects.filter(tenant=owner.tenant).count() for model in (Conversation, Message)}
    checked = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            body, _ = _request_body(operation, owners_objects)
            url = path.format(**{**owners_objects, "tenant_id": owner.tenant.id})
            response = getattr(owner.client, method)(url, {**body, "surprise_field": 1}, format="json")
            error = response.json().get("error", {})
            message = error if isinstance(error, str) else error.get("message", "")  # (/v1's error is a string)
            assert response.status_code == 400, (method, path, response.status_code, error)
            assert message.startswith("surprise_field: Unknown field"), (method, path, error)
            documented = content["application/json"]["schema"]
            if "$ref" in documented:
                documented = schema["components"]["schemas"][documented["$ref"].rsplit("/", 1)[1]]
            assert documented.get("additionalProperties") is False, (method, path)  # the schema says so too
            checked.append(f"{method.upper()} {path}")
    assert len(checked) >= 12, checked
    assert {model: model.objects.filter(tenant=owner.tenant).count() for model in rows_before} == rows_before
