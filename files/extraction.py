"""Text extraction from untrusted documents, bounded in pages, characters and time, and the split of the
text into passages of about 800 characters for the retrieval index."""

from __future__ import annotations

import json
import logging
import re
import time
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import IO

from django.conf import settings

from files.models import ExtractionStatus

logger = logging.getLogger(__name__)

PASSAGE_CHARS = 800
DOCX_MAX_XML_BYTES = 64 * 1024 * 1024  # a zip bomb in word/document.xml is refused before parsing

TEXT_TYPES = {"text/plain", "text/markdown", "text/csv", "text/tab-separated-values", "application/xml"}
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class ExtractionFailed(Exception):
    pass


@dataclass
class Extraction:
    status: str
    error: str = ""
    page_count: int | None = None
    pages: list[tuple[int | None, str]] = field(default_factory=list)  # (1-based page or None, text)


class _Budget:
    def __init__(self):
        self.chars = settings.FILE_EXTRACT_MAX_CHARS
        self.deadline = time.monotonic() + settings.FILE_EXTRACT_SECONDS

    def take(self, text: str) -> str:
        if time.monotonic() > self.deadline:
            raise ExtractionFailed(f"Extraction took longer than {settings.FILE_EXTRACT_SECONDS:g} s.")
        text = text[: self.chars]
        self.chars -= len(text)
        return text

    @property
    def spent(self) -> bool:
        return self.chars <= 0


def _read_text(stream: IO[bytes], budget: _Budget) -> str:
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


def _pdf_pages(stream: IO[bytes], budget: _Budget) -> Extraction:
    from pypdf import PdfReader

    reader = PdfReader(stream)
    if reader.is_encrypted:
        try:
            unlocked = reader.decrypt("")
        except Exception as exc:  # unsupported encryption algorithms raise various errors
            raise ExtractionFailed(f"The PDF is encrypted ({exc}).") from exc
        if not unlocked:
            raise ExtractionFailed("The PDF is encrypted with a password.")
    page_count = len(reader.pages)
    pages: list[tuple[int | None, str]] = []
    for number in range(min(page_count, settings.FILE_EXTRACT_MAX_PAGES)):
        if budget.spent:
            break
        pages.append((number + 1, budget.take(reader.pages[number].extract_text() or "")))
    return Extraction(status=ExtractionStatus.DONE, page_count=page_count, pages=pages)


def _docx_text(stream: IO[bytes], budget: _Budget) -> str:
    import docx

    with zipfile.ZipFile(stream) as archive:
        entry = archive.getinfo("word/document.xml")
        if entry.file_size > DOCX_MAX_XML_BYTES:
            raise ExtractionFailed("The document is too large to extract.")
    stream.seek(0)
    document = docx.Document(stream)
    parts: list[str] = []
    for paragraph in document.paragraphs:
        parts.append(budget.take(paragraph.text))
        if budget.spent:
            break
    for table in document.tables:
        for row in table.rows:
            if budget.spent:
                break
            parts.append(budget.take(" | ".join(cell.text for cell in row.cells)))
    return "\n".join(parts)


def text_extract(stream: IO[bytes], content_type: str) -> Extraction:
    """Extract the text of a file; never raises: failures come back as a `failed` Extraction."""
    budget = _Budget()
    try:
        if content_type == "application/pdf":
            return _pdf_pages(stream, budget)
        if content_type in TEXT_TYPES:
            text = budget.take(_read_text(stream, budget))
        elif content_type == "application/json":
            text = budget.take(_json_text(_read_text(stream, budget)))
        elif content_type == "text/html":
            parser = _HtmlText()
            parser.feed(_read_text(stream, budget))
            parser.close()
            text = budget.take("".join(parser.parts))
        elif content_type == DOCX_TYPE:
            text = _docx_text(stream, budget)
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
        for sentence in sentences_split(text):
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
