"""Per-message event logs and cancel flags.

With REDIS_URL each generation's events go to a Redis Stream and cancel requests are Redis keys, so any
server process can join, resume or cancel a generation running in another (turns.log.redis). Without it
an in-process log serves a single process (turns.log.memory), with a copy on disk for its next start
(turns.log.journal). Either way the log expires
STREAM_LOG_TTL_SECONDS after the generation ends (in-process: at once); from then on the stream is
rebuilt from the stored message (turns.events).
"""

from __future__ import annotations

from django.conf import settings

from turns.log.journal import Journal
from turns.log.memory import MemoryLog
from turns.log.redis import RedisLog

_log: MemoryLog | RedisLog | None = None


def stream_log() -> MemoryLog | RedisLog:
    """This process's log (a new one when the settings changed, as tests do)."""
    global _log
    if _log is None or (isinstance(_log, RedisLog) and _log.url != settings.REDIS_URL):
        if settings.REDIS_URL:
            _log = RedisLog(settings.REDIS_URL)
        else:
            _log = MemoryLog(journal=Journal(settings.VAR_DIR / "streams"))
    return _log
