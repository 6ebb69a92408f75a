"""OpenAPI generation: every operation documents the error shape for the statuses it can answer."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "code": serializers.CharField(help_text="Stable machine-readable code, e.g. `not_found`."),
                "message": serializers.CharField(help_text="Human-readable; names the field when invalid."),
                "details": serializers.DictField(help_text="Extra facts, e.g. field errors or a message id."),
            },
        )
    },
)

V1ErrorSerializer = inline_serializer(
    name="V1Error",
    fields={"success": serializers.BooleanField(default=False), "error": serializers.CharField()},
)

_ERROR_DESCRIPTIONS = {
    "400": "Invalid input (`invalid`): the message names the field.",
    "401": "Missing, unknown or revoked API key (`not_authenticated`).",
    "404": "Unknown object, or one of another tenant (`not_found`).",
    "415": "Unsupported Content-Type (`unsupported_media_type`).",
    "429": "Too many requests (`throttled`); see `Retry-After`.",
}


# The areas of the API (described in SPECTACULAR_SETTINGS["TAGS"]) by path: the first fragment the path holds.
_PATH_TAGS = [
    ("/v1/", "stateless v1"),
    ("/ws-tickets", "WebSocket"),
    ("/data-frames", "data frames"),
    ("/files", "files"),
    ("/related-documents", "files"),
    ("/messages", "messages and streams"),
    ("/stream", "messages and streams"),
    ("/api/v2/conversations", "management"),
    ("/conversations", "conversations"),
    ("/agents", "agents"),
    ("/tools", "tools"),
    ("/mcp-servers", "tools"),
    ("/usage", "usage and feedback"),
    ("/feedback", "usage and feedback"),
]


# Component names (without the Patched/Request variants) of serializers that refuse keys they do not list.
_CLOSED_COMPONENTS: set[str] = set()


def refuses_unknown_keys(serializer_class):
    """Class decorator: the serializer answers 400 for a key it does not list, and its schema says so
    (`additionalProperties: false`), so that clients and fuzzers send only those."""
    _CLOSED_COMPONENTS.add(serializer_class.__name__.removesuffix("Serializer"))
    return serializer_class


def close_objects(result, generator, request, public):
    """SPECTACULAR_SETTINGS postprocessing hook for `refuses_unknown_keys`."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.removeprefix("Patched").removesuffix("Request") in _CLOSED_COMPONENTS:
            schema["additionalProperties"] = False
    return result


class AutoSchema(SpectacularAutoSchema):
    def get_description(self) -> str:
        """Only what an operation's extend_schema says: docstrings are notes for this code's developers."""
        return ""

    def get_tags(self) -> list[str]:
        """The area of the API the operation belongs to, from its path."""
        path = self.path
        return [next((tag for fragment, tag in _PATH_TAGS if fragment in path), "operations")]

    def _get_response_for_code(self, serializer, status_code, media_types=None, direction="response"):
        # Every answer is JSON, unless the operation declares another type for a status (a stream, a file):
        # the views that may stream also have the event-stream renderer, which is not what their errors and
        # other answers are.
        media_types = media_types or ["application/json"]
        return super()._get_response_for_code(serializer, status_code, media_types, direction)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        # Only what the operation can answer: 401 where a key is needed, 429 where it is throttled, 415
        # where it reads a body.
        codes = ["400", "404"]
        if self.view.authentication_classes:
            codes.append("401")
        if self.view.throttle_classes:
            codes.append("429")
        if self.method in {"POST", "PUT", "PATCH"} and self.get_request_serializer() is not None:
            codes.append("415")
        error_serializer = getattr(self.view, "error_serializer", ErrorSerializer)
        for code in codes:
            if code not in responses:
                body = self._get_response_for_code(error_serializer, code)
                body["description"] = _ERROR_DESCRIPTIONS[code]
                responses[code] = body
        return responses


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <API key>`"}
