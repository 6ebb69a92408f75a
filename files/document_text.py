"""The text of a PDF or DOCX document, read in a child process that the server can kill.

Their parsers work through untrusted bytes page by page, and one page can take minutes: a 3 kB PDF whose
page shows 100,000 strings costs pypdf 4 s, and the cost grows faster than the page. A time budget checked
between pages cannot stop that, and a thread in the server would compete with every request for the GIL
all the while. So `files.extraction` runs this file as a script, with no environment and an address
space limit, and kills it at the time limit.

    python -I document_text.py <content type> <max pages> <max chars> <seconds> <memory bytes> < document

It prints one JSON object: {"status": "done", "page_count": n | null, "pages": [[page | null, text], ...]}
or {"status": "failed", "error": "..."}. It imports neither Django nor the project.
"""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from typing import IO

PDF_TYPE = "application/pdf"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
DOCX_MAX_XML_BYTES = 64 * 1024 * 1024  # a zip bomb in word/document.xml is refused before parsing


class ExtractionFailed(Exception):
    pass


class Budget:
    """What is left of the characters and time allowed to one document's extraction."""

    def __init__(self, *, chars: int, seconds: float):
        self.chars, self.seconds = chars, seconds
        self.deadline = time.monotonic() + seconds

    def take(self, text: str) -> str:
        if time.monotonic() > self.deadline:
            raise ExtractionFailed(f"Extraction took longer than {self.seconds:g} s.")
        text = text[: self.chars]
        self.chars -= len(text)
        return text

    @property
    def spent(self) -> bool:
        return self.chars <= 0


def pdf_pages(stream: IO[bytes], budget: Budget, *, max_pages: int) -> tuple[int, list[tuple[int, str]]]:
    """The page count and the text of the first pages, as far as the budget goes."""
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
    pages: list[tuple[int, str]] = []
    for number in range(min(page_count, max_pages)):
        if budget.spent:
            break
        pages.append((number + 1, budget.take(reader.pages[number].extract_text() or "")))
    return page_count, pages


def docx_text(stream: IO[bytes], budget: Budget) -> str:
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


def extract(stream: IO[bytes], content_type: str, *, max_pages: int, budget: Budget) -> dict:
    try:
        if content_type == PDF_TYPE:
            page_count, pages = pdf_pages(stream, budget, max_pages=max_pages)
            return {"status": "done", "page_count": page_count, "pages": pages}
        if content_type == DOCX_TYPE:
            return {"status": "done", "page_count": None, "pages": [[None, docx_text(stream, budget)]]}
        raise ExtractionFailed(f"No extractor for {content_type}.")
    except ExtractionFailed as exc:
        return {"status": "failed", "error": str(exc)}
    except MemoryError:
        return {"status": "failed", "error": "Extraction needed more memory than allowed."}
    except Exception as exc:  # parsers of untrusted documents raise anything
        return {"status": "failed", "error": f"Could not read the document: {exc!r}"[:500]}


def main(argv: list[str]) -> None:
    content_type, max_pages, max_chars, seconds, memory_bytes = argv
    import logging
    import resource

    # pypdf logs a warning for every flaw it works around: a crafted file makes megabytes of them.
    logging.disable(logging.CRITICAL)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = int(memory_bytes) if hard == resource.RLIM_INFINITY else min(int(memory_bytes), hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    source = sys.stdin.buffer  # the upload's own file, read where it lies; bytes through a pipe are buffered
    if not source.seekable():
        source = io.BytesIO(source.read())
    budget = Budget(chars=int(max_chars), seconds=float(seconds))
    result = extract(source, content_type, max_pages=int(max_pages), budget=budget)
    sys.stdout.buffer.write(json.dumps(result).encode())


if __name__ == "__main__":
    main(sys.argv[1:])
