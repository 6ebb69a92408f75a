"""The JSON parser of every API view: DRF's, refusing what it would let through to a 500."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, parsers


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, plus two refusals with a 400 instead of a failure further in:

    - nesting deep enough to exhaust the interpreter's recursion limit (a 100 kB body of `[` does);
    - a NUL character (`\\u0000`) in any key or string: PostgreSQL text and jsonb cannot store one.
    """

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None
        if _holds_nul(data):
            raise exceptions.ParseError("JSON parse error - NUL characters (\\u0000) are not allowed.")
        return data


def _holds_nul(data: Any) -> bool:
    pending = [data]
    while pending:  # iterative: the body may be as deep as the parser allowed
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False
