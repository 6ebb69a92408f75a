"""Django's own middleware keep doing their job under ASGI: CSRF on the admin's forms, the security headers."""

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient


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
