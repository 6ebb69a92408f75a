"""The base of every serializer that reads a JSON body: a key it does not declare is a 400 naming it (a
misspelt field must not be silently ignored), and its OpenAPI schema says so (`additionalProperties:
false`). `aliases` maps another name a client may use (the seeds' word, say) to the field's: both are
declared fields, each validated under its own name, and the alias's value is given as the field's."""

from urllib.parse import urlsplit

from rest_framework import serializers

from core.schema import refuses_unknown_keys


class InputSerializer(serializers.Serializer):
    aliases: dict[str, str] = {}  # alias -> field

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        refuses_unknown_keys(cls)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            if unknown := sorted(key for key in data if key not in self.fields or self.fields[key].read_only):
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
            if both := [alias for alias, field in self.aliases.items() if alias in data and field in data]:
                field = self.aliases[both[0]]
                raise serializers.ValidationError({both[0]: [f"An alias of `{field}`: give one of them, not both."]})
        value = super().to_internal_value(data)
        for alias, field in self.aliases.items():
            if alias in value:
                value[field] = value.pop(alias)
        return value


def remote_url_validate(value: str) -> str:
    """A URL of the tenant's that Parley will call (a tool, an MCP server, a webhook endpoint): http(s) with
    a host, no credentials or fragment. Where it may lead is checked when it is called (agents.outbound)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise serializers.ValidationError("Not a URL.") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or port == 0:
        raise serializers.ValidationError("Must be an https:// (or http://) URL with a host.")
    if parts.username or parts.password or parts.fragment:
        raise serializers.ValidationError("Must hold no user, password or fragment.")
    return value
