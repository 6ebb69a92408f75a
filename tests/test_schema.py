import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_the_openapi_schema_documents_every_route_with_errors(anon):
    response = anon.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    assert "/tenants/{tenant_id}/api/v2/agents" in paths
    conversations = paths["/tenants/{tenant_id}/api/v2/agents/{agent_id}/conversations"]
    listing = conversations["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "next"}
    page_ref = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page_schema = schema["components"]["schemas"][page_ref.rsplit("/", 1)[1]]
    assert set(page_schema["properties"]) == {"items", "next"}
    for path, operations in paths.items():
        if path == "/healthz":  # no key, no tenant
            continue
        for method, operation in operations.items():
            assert "404" in operation["responses"], (method, path)
            # A signed link is its own credential, and is not throttled: no 401 or 429 to document.
            keyless = path.endswith("/files/signed/{token}")
            assert ("401" in operation["responses"]) is not keyless, (method, path)
            assert ("429" in operation["responses"]) is not keyless, (method, path)
    cancel = paths[
        "/tenants/{tenant_id}/api/v2/agents/{agent_id}/conversations/{conversation_id}/messages/{message_id}/cancel"
    ]
    assert "415" not in cancel["post"]["responses"]  # it reads no body
    assert "415" in paths["/tenants/{tenant_id}/api/v2/agents"]["post"]["responses"]
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    v1 = paths["/v1/conversation"]["post"]
    assert v1["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/V1Error")
    assert {"/v1/files", "/v1/files/{file_ref}"} <= set(paths)
    assert "text/event-stream" in v1["responses"]["200"]["content"]


def test_swagger_ui_is_served(anon):
    response = anon.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_every_reference_in_the_schema_resolves(anon):
    """Client generators stop at a dangling $ref (the conversation state's StateMessage was one)."""
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    def refs(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = set(refs(schema))
    assert "#/components/schemas/StateMessage" in found
    assert {ref for ref in found if ref.rsplit("/", 1)[1] not in schema["components"]["schemas"]} == set()


def test_the_schema_is_valid_openapi_generated_without_a_warning(tmp_path):
    call_command("spectacular", "--file", str(tmp_path / "schema.yaml"), "--validate", "--fail-on-warn")
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3.")


def test_operations_are_grouped_by_area_and_healthz_is_documented(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    areas = [tag["name"] for tag in schema["tags"]]
    tagged = {
        (path, method): operation["tags"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert all(len(tags) == 1 and tags[0] in areas for tags in tagged.values())
    assert {tags[0] for tags in tagged.values()} == set(areas)  # every area has operations
    prefix = "/tenants/{tenant_id}/api/v2"
    assert tagged[(f"{prefix}/agents/{{agent_id}}/conversations/{{conversation_id}}/stream", "post")] == [
        "messages and streams"
    ]
    assert tagged[(f"{prefix}/conversations/search", "get")] == ["management"]
    health = schema["paths"]["/healthz"]["get"]
    assert health["tags"] == ["operations"] and set(health["responses"]) == {"200", "503"}


def test_descriptions_are_for_users_not_the_views_docstrings(anon):
    """Swagger UI showed the views' docstrings (adrf, thread switches) as what the endpoints do."""
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operations = [operation for item in schema["paths"].values() for operation in item.values()]
    for operation in operations:
        assert operation.get("summary"), operation["operationId"]
        description = operation.get("description", "").lower()
        assert not any(word in description for word in ("adrf", "thread", "worker")), operation["operationId"]
    messages = schema["paths"]["/tenants/{tenant_id}/api/v2/agents/{agent_id}/conversations/{conversation_id}/messages"]
    assert (
        "409" in messages["post"]["description"]
        and messages["post"]["requestBody"]["content"]["application/json"]["examples"]
    )


def test_only_streams_are_declared_as_event_streams_and_their_events_are_described(anon):
    """Every error is JSON, and /v1/files never streams (both were declared text/event-stream)."""
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    streaming = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                content = response.get("content", {})
                if "text/event-stream" in content:
                    streaming.add((path, method, code))
                    assert content["text/event-stream"]["schema"]["$ref"].endswith("/StreamEvent")
    prefix = "/tenants/{tenant_id}/api/v2/agents/{agent_id}/conversations/{conversation_id}"
    assert streaming == {
        (f"{prefix}/stream", "post", "200"),
        (f"{prefix}/messages/{{message_id}}/stream", "get", "200"),
        ("/v1/conversation", "post", "200"),
    }
    event = schema["components"]["schemas"]["StreamEvent"]["properties"]
    assert {"content", "thinking", "done", "error", "reconnect"} <= set(event)


def test_declared_shapes_are_the_answers_shapes(anon):
    """What a fuzzer found declared otherwise than answered."""
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths, components = schema["paths"], schema["components"]["schemas"]
    delete_all = paths["/tenants/{tenant_id}/api/v2/conversations"]["delete"]["responses"]
    assert "204" not in delete_all and delete_all["200"]["content"]["application/json"]  # it answers {"deleted": n}
    assert "format" not in components["Citation"]["properties"]["url"]  # "" for a file: not a URI
    with_format = {path for path, item in paths.items() for op in item.values() for p in op.get("parameters", [])
                   if p["name"] == "format"}  # fmt: skip
    assert with_format == {"/tenants/{tenant_id}/api/v2/agents/{agent_id}/conversations/{conversation_id}/export"}
    assert "V1ConversationRequest" in components and "V1ConversationRequestRequest" not in components
    download = paths["/tenants/{tenant_id}/api/v2/agents/{agent_id}/conversations/{conversation_id}/files/download/"]
    assert list(download["get"]["responses"]["200"]["content"]) == ["*/*"]  # the file's own type


def test_every_operation_is_documented_for_users(anon):
    """Issue 19: each operation says what it does and its errors, with at least one example."""
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    undocumented = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            contents = [
                *operation.get("requestBody", {}).get("content", {}).values(),
                *(c for response in operation["responses"].values() for c in response.get("content", {}).values()),
            ]
            examples = [c["examples"] for c in contents if c.get("examples")]
            examples += [p["examples"] for p in operation.get("parameters", []) if p.get("examples")]
            description = operation.get("description", "")
            if not (operation.get("summary") and description and examples):
                undocumented.append(f"{method.upper()} {path}")
            elif path != "/healthz" and "\n\nErrors: " not in description:
                undocumented.append(f"{method.upper()} {path}: no closing 'Errors:' paragraph")
    assert undocumented == []
