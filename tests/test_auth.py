import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db


def test_it_accepts_a_valid_key(owner):
    response = owner.client.get(f"{owner.base}/agents")
    assert response.status_code == 200
    assert [a["id"] for a in response.json()["items"]] == [owner.agent.id]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer prl_deadbeef_notarealsecret",
        "Bearer prl_short_x",
        "Bearer two words",
        "Token prl_deadbeef_x",
    ],
)
def test_it_rejects_missing_or_bad_keys_with_401(owner, header):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(f"{owner.base}/agents")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_rejects_a_key_with_the_wrong_secret(owner):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer prl_{owner.key.prefix}_{'x' * 43}")
    assert client.get(f"{owner.base}/agents").status_code == 401


def test_it_rejects_a_revoked_key(owner):
    owner.key.revoke()
    response = owner.client.get(f"{owner.base}/agents")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_key_under_another_tenants_url_is_404(owner, outsider):
    response = owner.client.get(f"{outsider.base}/agents")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_unknown_tenant_in_the_url_is_404(owner):
    assert owner.client.get("/tenants/nope/api/v2/agents").status_code == 404


def test_an_inactive_tenant_is_404(owner):
    Tenant.objects.filter(id=owner.tenant.id).update(is_active=False)
    assert owner.client.get(f"{owner.base}/agents").status_code == 404


def test_keys_are_stored_only_as_hashes(owner):
    stored = ApiKey.objects.get(pk=owner.key.pk)
    secret_part = owner.secret.split("_", 2)[2]
    assert secret_part not in stored.hash
    assert len(stored.hash) == 64
    assert len(secret_part) >= 43  # 32 random bytes, base64url


def test_last_used_at_is_written_at_most_once_a_minute(owner, django_assert_num_queries):
    owner.client.get(f"{owner.base}/agents")
    first = ApiKey.objects.get(pk=owner.key.pk).last_used_at
    assert first is not None
    owner.client.get(f"{owner.base}/agents")
    assert ApiKey.objects.get(pk=owner.key.pk).last_used_at == first
    ApiKey.objects.filter(pk=owner.key.pk).update(last_used_at=first - timedelta(minutes=2))
    owner.client.get(f"{owner.base}/agents")
    assert ApiKey.objects.get(pk=owner.key.pk).last_used_at > first - timedelta(seconds=1)


def _last_line(out: io.StringIO) -> str:
    return out.getvalue().strip().splitlines()[-1]


def test_create_tenant_prints_a_working_key_on_the_last_line():
    out = io.StringIO()
    call_command("create_tenant", "initech", "--name", "Initech", stdout=out)
    key = _last_line(out)
    assert Tenant.objects.get(id="initech").name == "Initech"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/tenants/initech/api/v2/agents").status_code == 200


def test_create_tenant_rejects_bad_and_duplicate_ids(owner):
    with pytest.raises(CommandError):
        call_command("create_tenant", "Bad_Id!", stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("create_tenant", owner.tenant.id, stdout=io.StringIO())


def test_create_api_key_and_revoke_api_key(owner):
    out = io.StringIO()
    call_command("create_api_key", owner.tenant.id, "--name", "ci", stdout=out)
    key = _last_line(out)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get(f"{owner.base}/agents").status_code == 200

    prefix = key.split("_")[1]
    call_command("revoke_api_key", prefix, stdout=io.StringIO())
    assert client.get(f"{owner.base}/agents").status_code == 401
    assert ApiKey.objects.get(prefix=prefix).revoked_at <= timezone.now()
    with pytest.raises(CommandError):
        call_command("revoke_api_key", "00000000", stdout=io.StringIO())
    with pytest.raises(CommandError):
        call_command("create_api_key", "no-such-tenant", stdout=io.StringIO())


def test_ensure_demo_tenant_prints_a_working_key_that_survives_restarts(tmp_path):
    """Every `make run` prints the same key (an open shell's $KEY keeps working), kept in a file only its user
    reads; a new one, and the old revoked, only once that key no longer works."""
    key_file = tmp_path / "demo_key"
    keys = []
    for _ in range(2):
        out = io.StringIO()
        call_command("ensure_demo_tenant", "--key-file", str(key_file), stdout=out)
        keys.append(_last_line(out))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {keys[-1]}")
        response = client.get("/tenants/demo/api/v2/agents")
        assert response.status_code == 200
        assert len(response.json()["items"]) == 1
        agent_id = response.json()["items"][0]["id"]
        assert f"AID={agent_id}" in out.getvalue() and "curl" in out.getvalue()
    assert keys[0] == keys[1] == key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o777 == 0o600

    call_command("revoke_api_key", keys[0].split("_")[1], stdout=io.StringIO())
    out = io.StringIO()
    call_command("ensure_demo_tenant", "--key-file", str(key_file), stdout=out)
    assert _last_line(out) != keys[0] and ApiKey.objects.active().filter(tenant_id="demo").count() == 1
