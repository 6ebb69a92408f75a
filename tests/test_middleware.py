"""Django's session, auth, messages and common middleware run their hooks on the event loop unless a hook
must touch the database (core.middleware.InlineHooks)."""

import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.sessions.models import Session
from django.http import HttpResponse
from django.test import AsyncRequestFactory

from core.middleware import AuthenticationMiddleware, CommonMiddleware, MessageMiddleware, SessionMiddleware


def chain(view):
    """The four middleware in settings order around an async view."""
    return SessionMiddleware(CommonMiddleware(AuthenticationMiddleware(MessageMiddleware(view))))


class HookThreads:
    """Records the thread each process_response of the chain ran on."""

    def __init__(self, monkeypatch):
        self.threads = {}
        for cls in (SessionMiddleware, CommonMiddleware, MessageMiddleware):
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
