"""schemathesis hooks for tests/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS by the `st` process)."""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    # An agent's chunk_delay_ms (a load-test option, up to 60 s a chunk) would make each of its replies last
    # hours, and every later request on it time out: the fuzzer's agents answer at once.
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("options"), dict):
        body["options"].pop("chunk_delay_ms", None)
