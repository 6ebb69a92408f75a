from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import JsonResponse
from django.utils.decorators import sync_and_async_middleware
from whitenoise.middleware import WhiteNoiseMiddleware

from core.errors import error_body, v1_error_body
from core.tenancy import request_scope_enter


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
def api_requests_see_nothing(get_response):
    """A request to the API runs as the application role with no tenant, seeing no tenant's rows, until
    authentication names its tenant (core.tenancy); first in the chain, so nothing runs before it. A
    middleware, not a request_started receiver: Django sends that signal to async servers' requests in a
    child task, whose context is not the request's."""
    if iscoroutinefunction(get_response):

        async def middleware(request):
            request_scope_enter(request.path)
            return await get_response(request)

    else:

        def middleware(request):
            request_scope_enter(request.path)
            return get_response(request)

    return middleware


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
    if request.path.startswith("/v1/"):
        return JsonResponse(v1_error_body(message), status=400)
    return JsonResponse(error_body("invalid", message), status=400)
