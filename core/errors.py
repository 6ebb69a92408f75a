"""The one error shape of the API: {"error": {"code", "message", "details"}}, and the handlers that make it."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """An error the API reports to its client with a stable `code`."""

    code = "invalid"
    status = 400
    default_message = "Invalid request."
    headers: dict[str, str] = {}  # sent with the answer (e.g. 416's Content-Range)

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        self.message = message or self.default_message
        self.details = details or {}
        super().__init__(self.message)


class Invalid(ApplicationError):
    pass


class NotAuthenticated(ApplicationError):
    code, status, default_message = "not_authenticated", 401, "A valid API key is required."


class Forbidden(ApplicationError):
    """Only where no resource is concerned (a signed URL's signature, a staff session's CSRF check): another
    tenant's ids are 404, never 403."""

    code, status, default_message = "forbidden", 403, "Forbidden."


class NotFound(ApplicationError):
    code, status, default_message = "not_found", 404, "Not found."


class Conflict(ApplicationError):
    code, status, default_message = "conflict", 409, "The resource is busy."


class IdempotencyKeyReused(ApplicationError):
    code, status = "idempotency_key_reused", 422
    default_message = "This Idempotency-Key was used with a different request."


class PayloadTooLarge(ApplicationError):
    code, status, default_message = "payload_too_large", 413, "The request is too large."


class UnsupportedMediaType(ApplicationError):
    code, status, default_message = "unsupported_media_type", 415, "Unsupported media type."


class Unavailable(ApplicationError):
    code, status = "unavailable", 503
    default_message = "This server process is restarting: send the request again (another process takes it)."


class RangeNotSatisfiable(ApplicationError):
    code, status, default_message = "range_not_satisfiable", 416, "The Range is outside the file."

    def __init__(self, size: int):
        super().__init__(details={"size": size})
        self.headers = {"Content-Range": f"bytes */{size}"}


class BadGateway(ApplicationError):
    """A server of the tenant's (an MCP server, say) that Parley asked could not answer."""

    code, status, default_message = "bad_gateway", 502, "The tenant's server did not answer."


class EngineError(ApplicationError):
    code, status, default_message = "engine_error", 502, "The agent's engine failed."


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _validation_message(detail: Any, path: str = "") -> str:
    """A one-line message naming the first invalid field, e.g. "name: This field is required." or, inside
    a list, "messages[0].role: ..."."""
    if isinstance(detail, dict):
        for key, errors in detail.items():
            if not errors:
                continue
            if key == "non_field_errors":
                return _validation_message(errors, path)
            inner = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
            return _validation_message(errors, inner)
    if isinstance(detail, list):
        for position, errors in enumerate(detail):
            if isinstance(errors, (dict, list)):
                if errors:
                    return _validation_message(errors, f"{path}[{position}]")
            else:
                return f"{path}: {errors}" if path else str(errors)
    return f"{path}: {detail}" if path else str(detail)


# DRF's own exceptions, mapped to the codes of the vocabulary.
_DRF_CODES: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "not_authenticated"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "throttled"),
    (exceptions.ParseError, "invalid"),
    (exceptions.PermissionDenied, "not_found"),
]


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every error, expected or not, leaves in the one shape."""
    # Imported here: rest_framework.views loads the authentication classes, which import this module.
    from rest_framework.views import set_rollback

    request = context.get("request")
    status, body, headers = error_answer(exc, where=getattr(request, "path", "?"))
    set_rollback()
    return Response(body, status=status, headers=headers)


def error_answer(exc: Exception, *, where: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The status, body (the one error shape) and headers an exception answers, over any transport;
    `where` names the request in the log of an unexpected error."""
    headers: dict[str, str] = {}
    if isinstance(exc, ApplicationError):
        status, body = exc.status, error_body(exc.code, exc.message, exc.details)
        headers.update(exc.headers)
        if isinstance(exc, Unavailable):
            headers["Retry-After"] = "1"
    elif isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        status, body = (
            413,
            error_body("payload_too_large", f"The request body is over {limit} bytes.", {"limit": limit}),
        )
    elif isinstance(exc, SuspiciousOperation):  # (a form with too many fields, read by whoever read it first)
        status, body = 400, error_body("invalid", str(exc) or "Bad request.")
    elif isinstance(exc, (Http404, DjangoPermissionDenied)):
        status, body = 404, error_body("not_found", "Not found.")
    elif isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        status, body = 400, error_body("invalid", _validation_message(detail), detail)
    elif isinstance(exc, exceptions.APIException):
        code = next((c for cls, c in _DRF_CODES if isinstance(exc, cls)), "invalid")
        status = 404 if isinstance(exc, exceptions.PermissionDenied) else exc.status_code
        message = "Not found." if code == "not_found" and status == 404 else str(exc.detail)
        body = error_body(code, message)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
            body["error"]["details"] = {"retry_after": int(headers["Retry-After"])}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
    else:
        logger.exception("Unhandled error on %s", where, exc_info=exc)
        status, body = 500, error_body("server_error", "Internal server error.")
    return status, body, headers


def v1_error_body(message: str) -> dict[str, Any]:
    """The stateless API's error shape (the seed's): `{"success": false, "error": "..."}`."""
    return {"success": False, "error": message}


def v1_exception_handler(exc: Exception, context: dict) -> Response:
    """The /v1 error shape, with the status and headers the v2 handler chose."""
    response = exception_handler(exc, context)
    response.data = v1_error_body(response.data["error"]["message"])
    return response


def error_response(exc: ApplicationError) -> JsonResponse:
    """The same shape for plain Django (async) views."""
    return JsonResponse(error_body(exc.code, exc.message, exc.details), status=exc.status)


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def server_error_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)


def bad_request_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("invalid", "Bad request."), status=400)


def permission_denied_view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("forbidden", "Forbidden."), status=403)
