from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import JsonResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware as DjangoXFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware
from django.utils.decorators import sync_and_async_middleware
from whitenoise.middleware import WhiteNoiseMiddleware

from core.errors import error_body


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise with an async path.

    WhiteNoise's own middleware is sync-only, and one sync middleware makes Django run the rest of the
    chain, async views included, in a thread per request: a post-and-wait would then hold a thread for
    the whole generation. Static files are served the same way; everything else stays async.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        super().__init__(get_response)
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self._is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)


@sync_and_async_middleware
def nul_characters_refused(get_response):
    """A 400 for a path or query string with a NUL character (`%00`).

    PostgreSQL text cannot store or compare one, so an id or a search query holding it would fail as a
    database error deep in a view. Async and sync alike, so that it costs no thread switch.
    """
    if iscoroutinefunction(get_response):

        async def middleware(request):
            return _nul_refusal(request) or await get_response(request)

    else:

        def middleware(request):
            return _nul_refusal(request) or get_response(request)

    return middleware


def _nul_refusal(request) -> JsonResponse | None:
    if "\x00" not in request.path and "%00" not in request.META.get("QUERY_STRING", ""):
        return None
    message = "NUL characters (%00) are not allowed in the path or the query string."
    if request.path.startswith("/v1/"):  # the stateless API's own error shape (conversations/stateless_apis.py)
        return JsonResponse({"success": False, "error": message}, status=400)
    return JsonResponse(error_body("invalid", message), status=400)


class InlineHooks:
    """For one of Django's MiddlewareMixin middleware: run its hooks on the event loop when they do no I/O.

    Under ASGI, MiddlewareMixin hands each process_request/process_response to the request's sync thread,
    a thread switch per hook and a wait behind every other request queued on that thread: two per
    middleware per request, for hooks that mostly set a lazy attribute or read a header. A response
    whose hook does touch the database (`response_needs_thread`) still goes to the thread.
    """

    def request_needs_thread(self, request) -> bool:
        return False

    def response_needs_thread(self, request) -> bool:
        return False

    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            if self.request_needs_thread(request):
                response = await sync_to_async(self.process_request, thread_sensitive=True)(request)
            else:
                response = self.process_request(request)
        response = response or await self.get_response(request)
        if not hasattr(self, "process_response"):
            return response
        if self.response_needs_thread(request):
            return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        return self.process_response(request, response)


class SessionMiddleware(InlineHooks, DjangoSessionMiddleware):
    """The session is a lazy store until read; only saving it (the admin's logins) queries the database."""

    def response_needs_thread(self, request) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class AuthenticationMiddleware(InlineHooks, DjangoAuthenticationMiddleware):
    """Sets `request.user` lazily: the session and the user are read only if a view asks."""


class MessageMiddleware(InlineHooks, DjangoMessageMiddleware):
    """Messages are stored (in the cookie, else the session) only if a view added or read some."""

    def response_needs_thread(self, request) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class CommonMiddleware(InlineHooks, DjangoCommonMiddleware):
    """Host, user-agent and trailing-slash checks and Content-Length: URL resolution and headers only."""


class SecurityMiddleware(InlineHooks, DjangoSecurityMiddleware):
    """The HTTPS redirect and the security headers: settings and headers only."""


class CsrfViewMiddleware(InlineHooks, DjangoCsrfViewMiddleware):
    """The CSRF token lives in a cookie: reading and setting it is header work. Kept in the session
    (CSRF_USE_SESSIONS), it would load and save the session, so the hooks go to the request's thread."""

    def request_needs_thread(self, request) -> bool:
        return settings.CSRF_USE_SESSIONS

    def response_needs_thread(self, request) -> bool:
        return settings.CSRF_USE_SESSIONS

    def __init__(self, get_response):
        super().__init__(get_response)
        if self.async_mode:  # Django looks the hook up on the instance, after this
            self.process_view = self.process_view_async

    async def process_view_async(self, request, callback, callback_args, callback_kwargs):
        # Under ASGI Django calls a sync process_view in the request's thread. The API's views are all
        # exempt (token authentication); the admin's forms are checked in the thread, as they read the body.
        if getattr(callback, "csrf_exempt", False):
            return None
        return await sync_to_async(super().process_view, thread_sensitive=True)(
            request, callback, callback_args, callback_kwargs
        )


class XFrameOptionsMiddleware(InlineHooks, DjangoXFrameOptionsMiddleware):
    """Sets the X-Frame-Options header."""
