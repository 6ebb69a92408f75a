"""The JSON parser of every API view: DRF's, refusing what it would let through to a 500."""

from __future__ import annotations

import io
import re
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers

from core.errors import PayloadTooLarge


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, plus two refusals with a 400 instead of a failure further in:

    - nesting deep enough to exhaust the interpreter's recursion limit (a 100 kB body of `[` does);
    - a NUL character (`\\u0000`) or a lone surrogate (`\\ud800`, half of a character) in any key or
      string: PostgreSQL text and jsonb cannot store either.
    """

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the body is nested too deeply.") from None
        if _holds_unstorable(data):
            raise exceptions.ParseError(
                "JSON parse error - NUL characters (\\u0000) and lone surrogates (\\ud800-\\udfff) are not allowed."
            )
        return data


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _holds_unstorable(data: Any) -> bool:
    pending = [data]
    while pending:  # iterative: the body may be as deep as the parser allowed
        value = pending.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


class LargeJSONParser(parsers.BaseParser):
    """JSONParser for the few bodies that may pass DATA_UPLOAD_MAX_MEMORY_SIZE (a document with files'
    bytes): up to the setting `max_bytes_setting` names, and 413 past it, before anything is parsed. (Not a
    subclass: DRF reads a JSONParser's body through `request.body`, which that setting caps.)"""

    media_type = "application/json"
    max_bytes_setting = ""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = getattr(settings, self.max_bytes_setting)
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(
                f"The request body is over {limit} bytes ({self.max_bytes_setting}).",
                details={"limit": self.max_bytes_setting, "max_bytes": limit},
            )
        return JSONParser().parse(io.BytesIO(body), media_type, parser_context)
