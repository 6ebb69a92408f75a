"""Tabular files of a conversation (CSV, XLSX, Parquet, JSON) as SQL tables named after their file stems."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa
from django.conf import settings

from core.errors import Invalid
from dataframes.parquet import parquet_check_footer, stored_file_path
from dataframes.sql import Sandbox
from files.models import File

KINDS_BY_SUFFIX = {
    ".csv": "csv",
    ".tsv": "csv",
    ".xlsx": "xlsx",
    ".parquet": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
KINDS_BY_CONTENT_TYPE = {
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/json": "json",
    "application/x-ndjson": "json",
}


@dataclass(frozen=True)
class TabularFile:
    table_name: str
    kind: str  # csv | xlsx | parquet | json
    file_name: str
    storage_key: str


def table_name_for(file_name: str) -> str:
    """`Sales Q3 (final).csv` -> `Sales_Q3_final`: an identifier made from the file stem."""
    stem = PurePosixPath(file_name).stem
    name = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_") or "file"
    if name[0].isdigit():
        name = "_" + name
    return name[:64]


def conversation_tabular_files(*, tenant_id: str, conversation_id: str) -> list[TabularFile]:
    """The conversation's files that read as tables, oldest first."""
    found = []
    files = File.objects.filter(tenant_id=tenant_id, conversation_id=conversation_id).order_by("created_at", "id")
    for file in files.only("name", "content_type", "storage_key"):
        kind = KINDS_BY_SUFFIX.get(PurePosixPath(file.name).suffix.lower()) or KINDS_BY_CONTENT_TYPE.get(
            (file.content_type or "").split(";")[0].strip().lower()
        )
        if kind:
            found.append(TabularFile(table_name_for(file.name), kind, file.name, file.storage_key))
    return found


def conversation_file_tables(
    *, tenant_id: str, conversation_id: str, taken: set[str]
) -> Iterator[tuple[TabularFile, str]]:
    """(file, table name) pairs; a name already `taken` (lower case: the frames') or used by an older file
    gets a numeric suffix."""
    taken = set(taken)
    for file in conversation_tabular_files(tenant_id=tenant_id, conversation_id=conversation_id):
        name, n = file.table_name, 1
        while name.lower() in taken:
            n += 1
            name = f"{file.table_name[:60]}_{n}"
        taken.add(name.lower())
        yield file, name


def register_tabular_file(sandbox: Sandbox, stack: ExitStack, file: TabularFile, name: str) -> None:
    """Make `file` visible as table `name`; refuses Parquet bombs and oversized sheets before decoding."""
    suffix = PurePosixPath(file.file_name).suffix.lower()
    path = stack.enter_context(stored_file_path(file.storage_key, suffix=suffix))
    if file.kind == "parquet":
        parquet_check_footer(path)
        sandbox.add_file_view(name, "read_parquet", path)
    elif file.kind == "csv":
        sandbox.add_file_view(name, "read_csv", path, "delim = '\t'" if suffix == ".tsv" else "")
    elif file.kind == "json":
        sandbox.add_file_view(name, "read_json", path)
    else:
        sandbox.add_arrow(name, xlsx_table(path))


def xlsx_table(path: str) -> pa.Table:
    """The first sheet of a workbook, its first row as the header; at most DATAFRAMES_MAX_CELLS cells."""
    import openpyxl

    # A file object, not the path: stored files have generated names without an extension, and
    # openpyxl refuses paths that do not end in .xlsx.
    with open(path, "rb") as handle:
        return _xlsx_table(openpyxl, handle)


def _xlsx_table(openpyxl, handle) -> pa.Table:
    # openpyxl reads a workbook's shared strings whole, in this process: a few MB of zip can expand to
    # gigabytes. The sizes a zip declares are the most zipfile will inflate, so they bound it.
    limit = settings.DATAFRAMES_XLSX_MAX_BYTES
    try:
        with zipfile.ZipFile(handle) as archive:
            expanded = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise Invalid(f"Not a readable XLSX workbook: {exc}") from None
    if expanded > limit:
        raise Invalid(f"The workbook expands to {expanded:,} bytes, more than the limit of {limit:,}; it was not read.")
    handle.seek(0)
    try:
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types (zip, XML, KeyError) for a damaged workbook
        raise Invalid(f"Not a readable XLSX workbook: {exc}") from None
    try:
        rows = workbook.worksheets[0].iter_rows(values_only=True)
        header = next(rows, None) or ()
        names = _unique([str(value) if value is not None else f"column_{i + 1}" for i, value in enumerate(header)])
        limit, cells = settings.DATAFRAMES_MAX_CELLS, 0
        columns: list[list] = [[] for _ in names]
        for row in rows:
            cells += len(names)
            if cells > limit:
                raise Invalid(f"The workbook has more than {limit:,} cells; it was not read.")
            for index in range(len(names)):
                columns[index].append(row[index] if index < len(row) else None)
    finally:
        workbook.close()
    arrays = []
    for values in columns:
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one column: keep them as text
            arrays.append(pa.array([None if value is None else str(value) for value in values], pa.string()))
    return pa.table(arrays, names=names) if names else pa.table({})


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        count = seen.get(name.lower(), 0)
        seen[name.lower()] = count + 1
        result.append(name if count == 0 else f"{name}_{count + 1}")
    return result
