"""A locked-down DuckDB for SQL over a conversation's data.

Only what is registered is visible: each table is a view over one local file (allowed by exact path) or an
Arrow table; then external access is disabled and the configuration locked, so the query cannot read other
paths or URLs, install or load extensions, attach databases or change limits. DuckDB's own parser must see
exactly one SELECT (WITH ... SELECT included); memory, threads, time and result rows are bounded by settings.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from django.conf import settings

from core.errors import Invalid


class QueryFailed(Invalid):
    """The query was refused or failed; the message says why in words a user can act on."""


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def read_only_statement(query: str) -> str:
    """The single SELECT statement in `query`, as DuckDB's parser reads it; anything else is refused."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryFailed(f"The query is not valid SQL: {_first_lines(exc)}") from None
    if len(statements) != 1:
        raise QueryFailed(f"Send exactly one query; this text holds {len(statements)} statements.")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        kind = statement.type.name
        raise QueryFailed(
            f"Only read queries (SELECT or WITH ... SELECT) are allowed; this is a {kind} statement. "
            "Writing, copying, attaching, installing or loading extensions and changing settings are refused."
        )
    return statement.query


def paths_scrubbed(text: str) -> str:
    """Error text for a client: paths under the storage root or the temp folder (S3 copies) become
    `<stored file>`, so that replies do not reveal the server's layout."""
    roots = [str(settings.MEDIA_ROOT), tempfile.gettempdir()]
    pattern = "|".join(re.escape(root.rstrip("/")) + r"/[^\s'\"]*" for root in roots)
    return re.sub(pattern, "<stored file>", text)


def _first_lines(exc: BaseException, limit: int = 400) -> str:
    text = " ".join(str(exc).strip().splitlines()[:3])
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class QueryResult:
    table: pa.Table
    truncated: bool  # more rows than the cap; `table` holds the first `cap`


RESULT_BATCH_ROWS = 8192


class Sandbox:
    """One DuckDB connection for one query: register tables, `lock()`, then `run()`; use as a context."""

    def __init__(self) -> None:
        self.connection = duckdb.connect(
            ":memory:",
            config={
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "allow_community_extensions": False,
                # Without this DuckDB would resolve unknown table names to Python variables of the caller.
                "python_enable_replacements": False,
                # No spilling: the memory limit is the bound, and nothing is written outside storage.
                "temp_directory": "",
                # Not the server's: a query of duckdb_settings() would show its home (and derived paths).
                "home_directory": "/nonexistent",
                "memory_limit": settings.DATAFRAMES_SQL_MEMORY_LIMIT,
                "threads": settings.DATAFRAMES_SQL_THREADS,
            },
        )
        self.paths: list[str] = []
        self.tables: list[str] = []
        self.locked = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info) -> None:
        self.connection.close()

    def add_file_view(self, name: str, reader: str, path: str, options: str = "") -> None:
        """A view `name` over `reader('path'[, options])`, e.g. read_parquet, read_csv, read_json."""
        assert not self.locked and reader in {"read_parquet", "read_csv", "read_json"}
        arguments = quote_string(path) + (f", {options}" if options else "")
        self.connection.execute(f"CREATE VIEW {quote_identifier(name)} AS SELECT * FROM {reader}({arguments})")
        self.paths.append(path)
        self.tables.append(name)

    def _scrubbed(self, exc: BaseException) -> str:
        """The error's first lines, without the server's storage paths (each becomes its table's name)."""
        text = _first_lines(exc)
        for path, name in zip(self.paths, self.tables, strict=True):
            text = text.replace(path, name)
        return paths_scrubbed(text)

    def add_arrow(self, name: str, table: pa.Table) -> None:
        assert not self.locked
        self.connection.register(name, table)
        self.tables.append(name)

    def lock(self) -> None:
        if self.paths:
            listed = ", ".join(quote_string(path) for path in self.paths)
            self.connection.execute(f"SET allowed_paths = [{listed}]")
        self.connection.execute("SET enable_external_access = false")
        self.connection.execute("SET lock_configuration = true")
        self.locked = True

    def run(self, query: str, *, max_rows: int | None = None) -> QueryResult:
        """Run one read-only query; raises QueryFailed with an explanation."""
        if not self.locked:
            self.lock()
        statement = read_only_statement(query)
        max_rows = settings.DATAFRAMES_SQL_MAX_ROWS if max_rows is None else max_rows
        timeout = settings.DATAFRAMES_SQL_TIMEOUT_SECONDS
        # DuckDB checks for interrupts between vectors, so a runaway query stops soon after the timer.
        timer = threading.Timer(timeout, self.connection.interrupt)
        timer.daemon = True
        timer.start()
        try:
            # Small batches, so that the byte cap is checked before much more than it is held: DuckDB's
            # memory limit covers its own work, not the Arrow data handed to Python.
            reader = self.connection.sql(statement).to_arrow_reader(min(max_rows + 1, RESULT_BATCH_ROWS) or 1)
            batches, rows, size = [], 0, 0
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                size += batch.nbytes
                if size > settings.DATAFRAMES_SQL_MAX_BYTES:
                    raise QueryFailed(
                        f"The result is larger than {settings.DATAFRAMES_SQL_MAX_BYTES // (1024 * 1024)} MiB; "
                        "select fewer or shorter columns, or aggregate first."
                    )
                if rows > max_rows:
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema)
        except duckdb.InterruptException:
            raise QueryFailed(f"The query ran for more than {timeout:g} s and was stopped.") from None
        except duckdb.OutOfMemoryException:
            raise QueryFailed(
                f"The query needed more memory than its limit ({settings.DATAFRAMES_SQL_MEMORY_LIMIT}); "
                "aggregate or filter the data first."
            ) from None
        except duckdb.PermissionException as exc:
            raise QueryFailed(
                "Refused: a query can read only this conversation's data frames and tabular files, not other "
                f"files, URLs, extensions or settings ({self._scrubbed(exc)})."
            ) from None
        except duckdb.Error as exc:
            raise QueryFailed(f"The query failed: {self._scrubbed(exc)}") from None
        finally:
            timer.cancel()
        truncated = table.num_rows > max_rows
        return QueryResult(table=table.slice(0, max_rows) if truncated else table, truncated=truncated)


def referenced_tables(query: str) -> set[str] | None:
    """Lower-cased names of the tables a query reads (CTE names included), from DuckDB's parse tree without
    binding anything; None when the parser cannot list them (then every table is registered)."""
    scratch = duckdb.connect(":memory:", config={"enable_external_access": False, "autoload_known_extensions": False})
    try:
        serialized = scratch.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0]
        tree = json.loads(serialized)
    except (duckdb.Error, TypeError, ValueError):
        return None
    finally:
        scratch.close()
    if not isinstance(tree, dict) or tree.get("error"):
        return None
    names: set[str] = set()
    pending: list = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
                names.add(node["table_name"].lower())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return names
