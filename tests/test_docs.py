"""docs/websocket.md, the WebSocket protocol's reference, against the consumer: every frame type, close code
and notice is named, and every JSON example parses."""

import json
import re

from tests.servers import BASE_DIR
from turns.consumers import _HANDLERS, CLOSE_STATUS_BASE, CLOSE_TOO_SLOW

PAGE = (BASE_DIR / "docs" / "websocket.md").read_text()

# The events core.notify's callers pass (conversations/services.py, turns/runtime.py, turns/services.py).
NOTICES = ["message.created", "message.completed", "conversation.updated", "conversation.deleted"]
NOTIFY_CALL = re.compile(r'conversation_a?notify\(\s*[\w.]+,\s*"([\w.]+)"')


def test_the_notices_listed_are_those_sent():
    apps = [
        d for d in BASE_DIR.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in ("var", "tests")
    ]
    sent = {event for app in apps for path in app.rglob("*.py") for event in NOTIFY_CALL.findall(path.read_text())}
    assert sent == set(NOTICES)


def test_it_names_every_client_frame_close_code_and_notice():
    for name in [*_HANDLERS, *NOTICES]:
        assert f"`{name}`" in PAGE, name
    for code in [*(CLOSE_STATUS_BASE + status for status in (401, 403, 404, 500, 503)), CLOSE_TOO_SLOW]:
        assert f"`{code}`" in PAGE, code


def test_its_json_examples_parse():
    blocks = re.findall(r"^```json\n(.*?)^```$", PAGE, re.M | re.S)
    assert blocks
    for block in blocks:
        json.loads(block)
    # The example session: one frame a line, after an arrow.
    frames = re.findall(r"^[→←] (.*)$", PAGE, re.M)
    assert frames
    for frame in frames:
        assert "type" in json.loads(frame), frame
