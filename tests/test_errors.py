import pytest
from django.test import override_settings
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
    assert 1 <= int(response["Retry-After"]) <= 60
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
