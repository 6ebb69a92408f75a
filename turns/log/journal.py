"""The in-process log's copy on local disk: one file of JSON lines per running reply.

Each event is written (to the operating system's page cache: no fsync) before any client can be sent it,
so the file holds at least what was streamed when the process dies, by kill -9 or out of memory alike.
Without Redis, the next start of the process reads it to take the reply over with exactly that text
(turns.services._streamed); the file goes with the reply's end. A power cut loses the page cache, and
with it what the last flush to the database did not store.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from turns.events import Entry

logger = logging.getLogger(__name__)


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._prefix = os.path.join(directory, "")  # (a str: a Path per event costs more than the write)
        self._failing = False  # warned once: a journal that cannot be written must not stop the replies

    def _path(self, message_id: str) -> str:
        return f"{self._prefix}{message_id}.jsonl"  # ids are the server's own (msg_ and base32)

    def append(self, message_id: str, seq: int, event: dict[str, Any]) -> None:
        line = (json.dumps([seq, event], ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            try:
                descriptor = os.open(self._path(message_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            except FileNotFoundError:
                self.directory.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(self._path(message_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(descriptor, line)  # O_APPEND: one write, one whole line
            finally:
                os.close(descriptor)
        except OSError:
            if not self._failing:
                logger.exception("Writing the stream journal in %s failed", self.directory)
            self._failing = True
        else:
            self._failing = False

    def drop(self, message_id: str) -> None:
        try:
            os.unlink(self._path(message_id))
        except FileNotFoundError:
            pass
        except OSError:
            logger.warning("Removing the stream journal of %s failed", message_id, exc_info=True)

    def entries(self, message_id: str) -> list[Entry]:
        """The events the file holds, in seq order, each once (a taken-over reply's events are written
        again when its run starts); a last line cut short by the process's death is left out."""
        try:
            with open(self._path(message_id), "rb") as file:
                raw = file.read()
        except FileNotFoundError:
            return []
        entries: list[Entry] = []
        for line in raw.split(b"\n"):
            try:
                seq, event = json.loads(line)
            except ValueError:  # the torn last line, or the empty one after the last newline
                continue
            if not entries or seq > entries[-1][0]:
                entries.append((seq, event))
        return entries
