import pytest
from django.test import Client, override_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def _assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_unknown_urls_are_json_404(owner):
    _assert_error_shape(owner.client.get(f"{owner.base}/nothing-here"), 404, "not_found")
    _assert_error_shape(APIClient().get("/nowhere"), 404, "not_found")


def test_unknown_ids_are_json_404(owner):
    _assert_error_shape(owner.client.get(f"{owner.base}/agents/agt_missing"), 404, "not_found")


def test_405_has_the_error_shape(owner):
    _assert_error_shape(owner.client.put(f"{owner.base}/agents", {}, format="json"), 405, "method_not_allowed")


def test_400_names_the_field(owner):
    error = _assert_error_shape(owner.client.post(f"{owner.base}/agents", {}, format="json"), 400, "invalid")
    assert "name" in error["details"]


def test_401_has_the_error_shape(owner):
    _assert_error_shape(APIClient().get(f"{owner.base}/agents"), 401, "not_authenticated")


def test_415_has_the_error_shape(owner):
    response = owner.client.post(f"{owner.base}/agents", data="<x/>", content_type="application/xml")
    _assert_error_shape(response, 415, "unsupported_media_type")


@override_settings(THROTTLE_RATE="3/min")
def test_429_has_the_error_shape_and_retry_after(owner, outsider):
    for _ in range(3):
        assert owner.client.get(f"{owner.base}/agents").status_code == 200
    response = owner.client.get(f"{owner.base}/agents")
    error = _assert_error_shape(response, 429, "throttled")
    assert 1 <= int(response["Retry-After"]) <= 120  # the sliding window: at most two windows
    assert error["details"]["retry_after"] == int(response["Retry-After"])
    # the limit is per key: another tenant's key is unaffected
    assert outsider.client.get(f"{outsider.base}/agents").status_code == 200


def test_a_tenants_own_rate_overrides_the_default(owner):
    owner.tenant.requests_per_minute = 2
    owner.tenant.save()
    codes = [owner.client.get(f"{owner.base}/agents").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_500_is_json_without_a_traceback(owner, monkeypatch):
    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("agents.apis.agent_list", explode)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.secret}")
    response = client.get(f"{owner.base}/agents")
    error = _assert_error_shape(response, 500, "server_error")
    assert "secret internals" not in response.content.decode()
    assert "Traceback" not in response.content.decode()
    assert error["details"] == {}


def test_healthz_checks_the_database(anon):
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}
    assert anon.head("/healthz").status_code == 200
    browserlike = Client(enforce_csrf_checks=True)  # as a real server: CSRF checked
    for method in ("POST", "TRACE", "DELETE", "QUERY"):  # (the fuzzer's TRACE got a 200, QUERY an HTML 403)
        refused = browserlike.generic(method, "/healthz")
        assert refused["Allow"] == "GET, HEAD"
        _assert_error_shape(refused, 405, "method_not_allowed")


def test_json_nested_too_deeply_is_400(owner):
    response = owner.client.generic("POST", f"{owner.base}/agents", "[" * 100_000, content_type="application/json")
    assert "nested too deeply" in _assert_error_shape(response, 400, "invalid")["message"]


@pytest.mark.parametrize(
    "body",
    [{"name": "a\u0000b"}, {"name": "ok", "options": {"k\u0000": 1}}, {"name": "ok", "options": {"k": ["\u0000"]}}],
    ids=["in a string", "in a key", "deep in a value"],
)
def test_a_nul_character_in_a_json_body_is_400_and_nothing_is_stored(owner, body):
    from agents.models import Agent

    before = Agent.objects.count()
    response = owner.client.post(f"{owner.base}/agents", body, format="json")
    assert "NUL" in _assert_error_shape(response, 400, "invalid")["message"]
    assert Agent.objects.count() == before


def test_a_nul_character_in_a_message_or_metadata_is_400(owner):
    conversation = owner.conversation()
    url = owner.conversation_url(conversation)
    _assert_error_shape(owner.client.post(f"{url}/messages", {"content": "hi\u0000"}, format="json"), 400, "invalid")
    _assert_error_shape(owner.client.patch(url, {"metadata": {"k": "\u0000"}}, format="json"), 400, "invalid")
    assert conversation.messages.count() == 0


def test_a_lone_surrogate_in_json_is_400_not_a_failure_to_store(owner):
    conversation = owner.conversation()
    url = owner.conversation_url(conversation)
    body = '{"metadata": {"k": "\\ud800"}}'  # half a character, which jsonb cannot hold
    error = _assert_error_shape(owner.client.patch(url, body, content_type="application/json"), 400, "invalid")
    assert "lone surrogates" in error["message"]
    conversation.refresh_from_db()
    assert conversation.metadata == {}


@pytest.mark.parametrize(
    "path", ["/agents/agt_%00", "/conversations/search?q=%00", "/agents?next=%00", "/conversations?agent_id=a%00"]
)
def test_a_nul_character_in_the_path_or_query_is_400(owner, path):
    response = owner.client.get(f"{owner.base}{path}")
    assert "NUL" in _assert_error_shape(response, 400, "invalid")["message"]


def test_a_nul_character_in_a_v1_path_is_400_in_the_v1_shape(owner):
    response = owner.client.get("/v1/files/file_%00")
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": "NUL characters (%00) are not allowed in the path or the query string.",
    }
