"""Django's own middleware keep doing their job under ASGI: CSRF on the admin's forms, the security headers."""

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient

from tests.servers import served


@pytest.mark.django_db(transaction=True)
async def test_the_admin_refuses_a_form_without_its_csrf_token():
    await User.objects.acreate_superuser("admin", "admin@example.com", "a-strong-password-123")
    client = AsyncClient(enforce_csrf_checks=True)
    credentials = {"username": "admin", "password": "a-strong-password-123"}

    refused = await client.post("/admin/login/", credentials)
    assert refused.status_code == 403 and b"CSRF" in refused.content

    page = await client.get("/admin/login/")
    token = page.cookies["csrftoken"].value
    logged_in = await client.post("/admin/login/", {**credentials, "csrfmiddlewaretoken": token})
    assert logged_in.status_code == 302 and "sessionid" in logged_in.cookies


@pytest.mark.django_db
async def test_responses_carry_the_security_headers():
    response = await AsyncClient().get("/healthz")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_cors_is_off_by_default_and_answers_the_listed_origins_only(owner, django_db_blocker):
    app = "https://app.example.com"
    url_path = f"{owner.agent_url}/conversations"
    preflight = {
        "Origin": app,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    with django_db_blocker.unblock(), served() as base:
        assert "access-control-allow-origin" not in httpx.options(f"{base}{url_path}", headers=preflight).headers
    with django_db_blocker.unblock(), served(CORS_ALLOWED_ORIGINS=app) as base:
        allowed = httpx.options(f"{base}{url_path}", headers=preflight)
        listed = httpx.get(f"{base}{url_path}", headers={"Origin": app, "Authorization": f"Bearer {owner.secret}"})
        other = httpx.get(
            f"{base}{url_path}", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {owner.secret}"}
        )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == app
    assert "idempotency-key" in allowed.headers["access-control-allow-headers"]
    assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == app
    assert "retry-after" in listed.headers["access-control-expose-headers"]
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
