"""Text extraction from untrusted documents, bounded in pages, characters and time, and the split of the
text into passages of about 800 characters for the retrieval index."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO

from django.conf import settings

from files import document_text
from files.document_text import DOCX_TYPE, PDF_TYPE, Budget, ExtractionFailed
from files.models import ExtractionStatus

logger = logging.getLogger(__name__)

PASSAGE_CHARS = 800
TEXT_TYPES = {"text/plain", "text/markdown", "text/csv", "text/tab-separated-values", "application/xml"}
DOCUMENT_TEXT_SCRIPT = Path(document_text.__file__)
CHILD_START_SECONDS = 5.0  # the child's interpreter and parser imports, on top of the extraction's own limit
CHILD_ENVIRONMENT = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TMPDIR")


@dataclass
class Extraction:
    status: str
    error: str = ""
    page_count: int | None = None
    pages: list[tuple[int | None, str]] = field(default_factory=list)  # (1-based page or None, text)


def _read_text(stream: IO[bytes], budget: Budget) -> str:
    # Four bytes a character at most in UTF-8: this is enough bytes for the character budget.
    raw = stream.read(budget.chars * 4)
    return raw.decode("utf-8", errors="replace")


class _HtmlText(HTMLParser):
    SKIP = {"script", "style", "template", "noscript", "head"}
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def _json_text(raw: str) -> str:
    """Keys and scalar values, one per line, so that a JSON document reads like text."""
    lines: list[str] = []

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, path)
        elif value is not None:
            lines.append(f"{path}: {value}" if path else str(value))

    try:
        walk(json.loads(raw), "")
    except ValueError:
        return raw  # cut by the budget or not JSON after all: index the raw text
    return "\n".join(lines)


def _document_extract(stream: IO[bytes], content_type: str) -> Extraction:
    """A PDF's or DOCX's text, from a child process killed at FILE_EXTRACT_SECONDS (files/document_text.py)."""
    seconds = settings.FILE_EXTRACT_SECONDS
    command = [
        sys.executable, "-I", "-W", "ignore", str(DOCUMENT_TEXT_SCRIPT), content_type,
        str(settings.FILE_EXTRACT_MAX_PAGES), str(settings.FILE_EXTRACT_MAX_CHARS), str(seconds),
        str(settings.FILE_EXTRACT_MEMORY_MB * 1024 * 1024),
    ]  # fmt: skip
    # The child inherits no secrets: only what an interpreter may need to start.
    environment = {name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ}
    try:
        with ExitStack() as stack:
            errors = stack.enter_context(tempfile.TemporaryFile())  # on disk: a crafted file can make a lot
            spooled = getattr(stream, "temporary_file_path", None)
            if spooled is not None:  # an upload spooled to disk: the child reads that file, from its start
                feed = {"stdin": stack.enter_context(open(spooled(), "rb"))}
            else:
                feed = {"input": stream.read()}
            done = subprocess.run(
                command, stdout=subprocess.PIPE, stderr=errors, env=environment,
                timeout=seconds + CHILD_START_SECONDS, **feed,
            )  # fmt: skip
            errors.seek(-min(500, errors.seek(0, os.SEEK_END)), os.SEEK_END)
            error_tail = errors.read()
    except subprocess.TimeoutExpired:
        return Extraction(status=ExtractionStatus.FAILED, error=f"Extraction took longer than {seconds:g} s.")
    except OSError as exc:  # no process could be started (out of memory or process slots)
        logger.error("Could not start the text extractor: %r", exc)
        return Extraction(status=ExtractionStatus.FAILED, error="The document could not be read now.")
    try:
        result = json.loads(done.stdout)
        if result["status"] != ExtractionStatus.DONE:
            return Extraction(status=ExtractionStatus.FAILED, error=str(result["error"]))
        return Extraction(
            status=ExtractionStatus.DONE,
            page_count=result["page_count"],
            pages=[(page, str(text)) for page, text in result["pages"]],
        )
    except (ValueError, KeyError, TypeError):
        # Killed by its address space limit in the interpreter itself, or a crash: no JSON came out.
        logger.warning("Extracting a %s: exit %s, %r", content_type, done.returncode, error_tail)
        return Extraction(status=ExtractionStatus.FAILED, error="Could not read the document.")


def text_extract(stream: IO[bytes], content_type: str) -> Extraction:
    """Extract the text of a file; never raises: failures come back as a `failed` Extraction."""
    if content_type in (PDF_TYPE, DOCX_TYPE):
        return _document_extract(stream, content_type)
    budget = Budget(chars=settings.FILE_EXTRACT_MAX_CHARS, seconds=settings.FILE_EXTRACT_SECONDS)
    try:
        if content_type in TEXT_TYPES:
            text = budget.take(_read_text(stream, budget))
        elif content_type == "application/json":
            text = budget.take(_json_text(_read_text(stream, budget)))
        elif content_type == "text/html":
            parser = _HtmlText()
            parser.feed(_read_text(stream, budget))
            parser.close()
            text = budget.take("".join(parser.parts))
        else:
            return Extraction(status=ExtractionStatus.UNSUPPORTED)
    except ExtractionFailed as exc:
        return Extraction(status=ExtractionStatus.FAILED, error=str(exc))
    except Exception as exc:  # parsers of untrusted documents raise anything; the file is kept regardless
        logger.info("Extraction of a %s file failed: %r", content_type, exc)
        return Extraction(status=ExtractionStatus.FAILED, error=f"Could not read the document: {exc}"[:500])
    return Extraction(status=ExtractionStatus.DONE, pages=[(None, text)])


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n{2,}")


def sentences_split(text: str) -> list[str]:
    return [" ".join(part.split()) for part in _SENTENCE_END.split(text) if part and part.strip()]


def passages_split(pages: list[tuple[int | None, str]], *, size: int = PASSAGE_CHARS) -> list[tuple[int | None, str]]:
    """Cut each page into passages of about `size` characters at sentence boundaries (a longer sentence
    is cut at a space); a passage never spans two pages, so that its page number is exact."""
    passages: list[tuple[int | None, str]] = []
    for page, text in pages:
        current = ""
        # PostgreSQL text cannot hold NUL, which binary junk in a "text" file or a PDF's strings may have.
        for sentence in sentences_split(text.replace("\x00", "")):
            while len(sentence) > size:
                cut = sentence.rfind(" ", 0, size)
                cut = cut if cut > size // 2 else size
                if current:
                    passages.append((page, current))
                    current = ""
                passages.append((page, sentence[:cut].strip()))
                sentence = sentence[cut:].strip()
            if current and len(current) + 1 + len(sentence) > size:
                passages.append((page, current))
                current = ""
            current = f"{current} {sentence}" if current else sentence
        if current:
            passages.append((page, current))
    return [(page, text) for page, text in passages if text]
