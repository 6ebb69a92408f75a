"""Django's middleware run their hooks on the event loop unless a hook must touch the database or read a
form (core.middleware.InlineHooks), and keep doing their job."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core import checks
from django.http import HttpResponse
from django.middleware.csrf import get_token
from django.test import AsyncClient, AsyncRequestFactory, RequestFactory
from django.views.decorators.csrf import csrf_exempt

from core.checks import check_security_middleware
from core.middleware import (
    AuthenticationMiddleware,
    CommonMiddleware,
    CsrfViewMiddleware,
    MessageMiddleware,
    SecurityMiddleware,
    SessionMiddleware,
    XFrameOptionsMiddleware,
)

WITH_HOOKS = (SecurityMiddleware, SessionMiddleware, CommonMiddleware, CsrfViewMiddleware, MessageMiddleware,
              XFrameOptionsMiddleware)  # fmt: skip


def chain(view):
    """Django's middleware in settings order around an async view."""
    return SecurityMiddleware(
        SessionMiddleware(
            CommonMiddleware(
                CsrfViewMiddleware(AuthenticationMiddleware(MessageMiddleware(XFrameOptionsMiddleware(view))))
            )
        )
    )


class HookThreads:
    """Records the thread each process_response of the chain ran on."""

    def __init__(self, monkeypatch):
        self.threads = {}
        for cls in WITH_HOOKS:
            original = cls.process_response

            def recorded(middleware, request, response, original=original, name=cls.__name__):
                self.threads[name] = threading.get_ident()
                return original(middleware, request, response)

            monkeypatch.setattr(cls, "process_response", recorded)


async def test_an_api_request_runs_every_hook_on_the_event_loop(monkeypatch):
    hooks = HookThreads(monkeypatch)

    async def view(request):
        return HttpResponse(b"ok")

    response = await chain(view)(AsyncRequestFactory().get("/api/anything", HTTP_HOST="testserver"))

    assert response.status_code == 200 and response["Content-Length"] == "2"  # CommonMiddleware ran
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
    assert set(hooks.threads) == {cls.__name__ for cls in WITH_HOOKS}
    assert set(hooks.threads.values()) == {threading.get_ident()}
    assert not response.cookies  # no session, no messages: nothing was stored


@pytest.mark.django_db(transaction=True)
async def test_a_session_or_message_write_goes_to_a_thread_and_is_stored(monkeypatch):
    hooks = HookThreads(monkeypatch)

    async def view(request):
        await sync_to_async(request.session.__setitem__)("visited", True)
        messages.info(request, "Saved.")
        return HttpResponse(b"ok")

    response = await chain(view)(AsyncRequestFactory().get("/admin/", HTTP_HOST="testserver"))

    loop_thread = threading.get_ident()
    assert hooks.threads["SessionMiddleware"] != loop_thread
    assert hooks.threads["MessageMiddleware"] != loop_thread
    assert hooks.threads["CommonMiddleware"] == loop_thread
    session_key = response.cookies["sessionid"].value
    stored = await Session.objects.aget(session_key=session_key)
    assert stored.get_decoded()["visited"] is True
    assert "messages" in response.cookies  # the message went to the cookie storage


@pytest.mark.django_db(transaction=True)
async def test_the_admin_still_refuses_a_form_without_its_csrf_token():
    await User.objects.acreate_superuser("admin", "admin@example.com", "a-strong-password-123")
    client = AsyncClient(enforce_csrf_checks=True)
    credentials = {"username": "admin", "password": "a-strong-password-123"}

    refused = await client.post("/admin/login/", credentials)
    assert refused.status_code == 403 and b"CSRF" in refused.content

    page = await client.get("/admin/login/")
    token = page.cookies["csrftoken"].value
    logged_in = await client.post("/admin/login/", {**credentials, "csrfmiddlewaretoken": token})
    assert logged_in.status_code == 302 and "sessionid" in logged_in.cookies


def form_view(request):
    return HttpResponse(b"saved")


async def async_response(request):
    return HttpResponse(b"ok")


async def test_csrf_refuses_a_post_without_its_token_and_accepts_one_with_it(settings):
    middleware = CsrfViewMiddleware(async_response)
    factory = AsyncRequestFactory()

    refused = factory.post("/form/", {"name": "x"})
    middleware.process_request(refused)
    response = await middleware.process_view(refused, form_view, (), {})
    assert response is not None and response.status_code == 403

    page = factory.get("/form/")
    token = get_token(page)
    accepted = factory.post("/form/", {"name": "x", "csrfmiddlewaretoken": token})
    accepted.COOKIES[settings.CSRF_COOKIE_NAME] = page.META["CSRF_COOKIE"]
    middleware.process_request(accepted)
    assert await middleware.process_view(accepted, form_view, (), {}) is None


async def test_csrf_passes_an_exempt_view_on_the_event_loop(monkeypatch):
    def no_thread(*args, **kwargs):
        raise AssertionError("went to a thread")

    monkeypatch.setattr("core.middleware.sync_to_async", no_thread)
    request = AsyncRequestFactory().post("/api/anything", {"name": "x"})
    middleware = CsrfViewMiddleware(async_response)
    middleware.process_request(request)
    assert await middleware.process_view(request, csrf_exempt(form_view), (), {}) is None


def test_csrf_under_wsgi_keeps_djangos_sync_check():
    middleware = CsrfViewMiddleware(form_view)
    assert not asyncio.iscoroutinefunction(middleware.process_view)
    response = middleware.process_view(RequestFactory().post("/form/", {"name": "x"}), form_view, (), {})
    assert response.status_code == 403


def test_the_deploy_checks_that_depend_on_the_middleware_still_run(settings):
    settings.SECURE_HSTS_SECONDS = 0
    settings.CSRF_COOKIE_SECURE = False
    ids = {message.id for message in check_security_middleware(None)}
    assert {"security.W004", "security.W016"} <= ids
    settings.SECURE_HSTS_SECONDS = 3600
    settings.CSRF_COOKIE_SECURE = True
    assert not {"security.W004", "security.W016"} & {message.id for message in check_security_middleware(None)}


def test_the_deploy_checks_are_registered(settings):
    settings.SECURE_HSTS_SECONDS = 0
    messages = checks.run_checks(tags=[checks.Tags.security], include_deployment_checks=True)
    assert "security.W004" in {message.id for message in messages}


def test_the_deploy_checks_report_missing_security_middleware(settings):
    settings.MIDDLEWARE = [path for path in settings.MIDDLEWARE if "Security" not in path]
    messages = check_security_middleware(None)
    assert [m.id for m in messages if isinstance(m, checks.Warning) and m.id == "core.W001"] == ["core.W001"]
