"""Data frames: SQL mode and tools over a conversation's data, the lockdown, and the data-frames API."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import io
import json
import math
import os
import time
import zipfile

import numpy as np
import openpyxl
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from asgiref.sync import sync_to_async
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections

from agents.engines.base import ChatMessage, DataFrameProduced, TurnContext
from agents.tools import ToolContext, registry
from conversations.models import Conversation, Message
from dataframes.builtin import answer_with_sql
from dataframes.models import DataFrame
from dataframes.services import dataframe_create
from turns.events import NUL_REPLACED

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


def make_frame(ctx, conversation: Conversation, name: str, data: pd.DataFrame | pa.Table) -> DataFrame:
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    return dataframe_create(tenant_id=ctx.tenant.id, conversation_id=conversation.id, name=name, table=table)


def ask(ctx, conversation: Conversation, question: str):
    """The SQL mode as the builtin engine calls it, for a real assistant message."""
    message = Message.objects.create(tenant=ctx.tenant, conversation=conversation, role="assistant")
    context = TurnContext(
        tenant_id=ctx.tenant.id,
        conversation_id=conversation.id,
        message_id=message.id,
        system_prompt="",
        history=[ChatMessage(role="user", content=question)],
    )
    return answer_with_sql(context), message


def frames_url(ctx, conversation: Conversation) -> str:
    return f"{ctx.conversation_url(conversation)}/data-frames"


def sales() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": ["north", "south", "north", "east", "south", "north"],
            "amount": [10.5, 20.0, 4.5, 7.25, 1.0, 5.0],
            "units": [1, 2, 3, 4, 5, 6],
        }
    )


def expected_records(df: pd.DataFrame) -> list[dict]:
    """pandas' rows in the API's JSON terms: missing and non-finite -> None, timestamps ISO 8601."""

    def convert(value):
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if value is None or value is pd.NaT or (not isinstance(value, str) and pd.isna(value)):
            return None
        return value.item() if hasattr(value, "item") else value

    return [{column: convert(value) for column, value in row.items()} for row in df.to_dict(orient="records")]


# --- SQL mode ----------------------------------------------------------------------------------


def test_a_sql_group_by_becomes_a_frame_and_an_answer(owner):
    conversation = owner.conversation()
    make_frame(owner, conversation, "sales", sales())
    question = (
        "Totals please:\n```sql\n-- name: totals\nSELECT region, sum(amount) AS total, count(*) AS n\n"
        "FROM sales GROUP BY region ORDER BY region\n```"
    )
    answer, message = ask(owner, conversation, question)

    assert answer.events == [DataFrameProduced(name="totals", rows=3, columns=["region", "total", "n"])]
    assert "3 rows and 3 columns" in answer.text
    assert "| region | total | n |" in answer.text
    assert "| north | 20.0 | 3 |" in answer.text
    assert any("sales (data frame, 6 rows)" in step for step in answer.steps)
    frame = DataFrame.objects.get(conversation=conversation, name="totals")
    assert frame.message_id == message.id
    assert frame.row_count == 3
    assert frame.schema[0] == {"name": "region", "dtype": "string"}
    assert default_storage.exists(frame.storage_key)
    assert frame.storage_key.startswith(f"dataframes/{owner.tenant.id}/{conversation.id}/")

    expected = sales().groupby("region", as_index=False).agg(total=("amount", "sum"), n=("units", "count"))
    body = owner.client.get(f"{frames_url(owner, conversation)}/totals").json()
    assert body["rows"] == expected_records(expected)
    assert body["total_rows"] == 3


def test_a_message_starting_with_select_or_with_is_run_and_named_result_n(owner):
    conversation = owner.conversation()
    first, _ = ask(owner, conversation, "select 42 AS answer")
    second, _ = ask(owner, conversation, "WITH t AS (SELECT 1 AS x) SELECT x + 1 AS y FROM t")
    assert [e.name for e in first.events + second.events] == ["result_1", "result_2"]
    assert "1 row and 1 column" in first.text
    assert "| 42 |" in first.text


@pytest.mark.parametrize(
    "question",
    ["hello there", "selection of the week", "```python\nprint(1)\n```", "Please SELECT the best one", ""],
)
def test_text_without_sql_is_not_the_sql_modes(owner, question):
    conversation = owner.conversation()
    answer, _ = ask(owner, conversation, question)
    assert answer is None


def test_a_long_result_shows_ten_preview_rows(owner):
    conversation = owner.conversation()
    answer, _ = ask(owner, conversation, "SELECT range AS n FROM range(25)")
    assert "25 rows and 1 column" in answer.text
    assert "| 9 |" in answer.text and "| 10 |" not in answer.text
    assert "Showing the first 10 of 25 rows." in answer.text


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "Refused"),
        ("SELECT * FROM 'https://example.com/data.csv'", "Refused"),
        ("SELECT * FROM glob('/etc/*')", "Refused"),
        ("COPY (SELECT 1) TO '{tmp}/out.csv'", "COPY statement"),
        ("ATTACH '{tmp}/other.duckdb' AS other", "ATTACH statement"),
        ("INSTALL httpfs", "Only read queries"),
        ("LOAD httpfs", "Only read queries"),
        ("SET enable_external_access = true", "SET statement"),
        ("PRAGMA enable_profiling", "Only read queries"),
        ("CREATE TABLE t AS SELECT 1", "CREATE statement"),
        ("SELECT 1; SELECT 2", "exactly one query"),
        ("SELEC 1", "not valid SQL"),
    ],
)
def test_the_lockdown_refuses_with_a_clear_reply(owner, tmp_path, query, reason):
    conversation = owner.conversation()
    make_frame(owner, conversation, "sales", sales())
    answer, _ = ask(owner, conversation, f"```sql\n{query.format(tmp=tmp_path)}\n```")
    assert answer.text.startswith("I could not run that query.")
    assert reason in answer.text
    assert "Tables you can query here: `sales`." in answer.text
    assert answer.events == []
    assert list(DataFrame.objects.values_list("name", flat=True)) == ["sales"]
    assert not os.path.exists(tmp_path / "out.csv")
    assert not os.path.exists(tmp_path / "other.duckdb")


def test_a_query_that_runs_forever_is_stopped(owner, settings):
    settings.DATAFRAMES_SQL_TIMEOUT_SECONDS = 0.5
    conversation = owner.conversation()
    started = time.monotonic()
    answer, _ = ask(owner, conversation, "SELECT count(*) FROM range(1000000000000000) t(x) WHERE x % 7 = 3")
    assert time.monotonic() - started < 10
    assert "ran for more than 0.5 s and was stopped" in answer.text
    assert not DataFrame.objects.exists()


def test_a_query_over_its_memory_limit_is_refused(owner, settings):
    settings.DATAFRAMES_SQL_MEMORY_LIMIT = "64MB"
    conversation = owner.conversation()
    answer, _ = ask(owner, conversation, "SELECT list(x) AS l FROM range(200000000) t(x)")
    assert "more memory than its limit (64MB)" in answer.text
    assert not DataFrame.objects.exists()


def test_results_are_capped_at_the_configured_rows(owner, settings):
    settings.DATAFRAMES_SQL_MAX_ROWS = 5
    conversation = owner.conversation()
    answer, _ = ask(owner, conversation, "SELECT range AS n FROM range(12)")
    assert answer.events[0].rows == 5
    assert "only the first 5 were kept" in answer.text
    assert DataFrame.objects.get().row_count == 5


@pytest.mark.parametrize(
    ("header", "reason"),
    [("-- name: 9lives", "cannot name a data frame"), ("-- name: sales", "already exists here")],
)
def test_bad_result_names_are_explained(owner, header, reason):
    conversation = owner.conversation()
    make_frame(owner, conversation, "sales", sales())
    answer, _ = ask(owner, conversation, f"```sql\n{header}\nSELECT 1 AS x\n```")
    assert reason in answer.text
    assert DataFrame.objects.count() == 1


def test_an_unknown_table_is_explained(owner):
    conversation = owner.conversation()
    answer, _ = ask(owner, conversation, "SELECT * FROM nowhere")
    assert "nowhere" in answer.text and "does not exist" in answer.text
    assert "no data frames or tabular files yet" in answer.text


def test_another_conversations_frames_are_invisible(owner, outsider):
    mine, theirs = owner.conversation(), outsider.conversation()
    make_frame(outsider, theirs, "secret", pd.DataFrame({"x": [1]}))
    make_frame(owner, owner.conversation("other"), "other_frame", pd.DataFrame({"x": [1]}))
    for table in ("secret", "other_frame"):
        answer, _ = ask(owner, mine, f"SELECT * FROM {table}")
        assert "does not exist" in answer.text, table


def test_unstorable_result_types_are_kept_as_text_and_duplicate_names_renamed(owner):
    conversation = owner.conversation()
    answer, _ = ask(owner, conversation, "SELECT INTERVAL 1 DAY AS gap, 1 AS a, 2 AS a")
    assert answer.events[0].columns == ["gap", "a", "a_2"]
    frame = DataFrame.objects.get()
    assert [c["dtype"] for c in frame.schema] == ["string", "int32", "int32"]


# --- tabular files, uploaded through the files API ---------------------------------------------


def build_parquet_bomb() -> bytes:
    """~42 kB that declares 176 million cells: 336 row groups of 2^19 zeros, each column chunk a one-value
    dictionary and a single RLE-encoded page (zstd)."""
    sink = io.BytesIO()
    schema = pa.schema([pa.field("x", pa.int8(), nullable=False)])
    rows = 1 << 19
    group = pa.table({"x": np.zeros(rows, dtype=np.int8)}, schema=schema)
    options = {"write_statistics": False, "data_page_size": 1 << 30, "max_rows_per_page": rows}
    with pq.ParquetWriter(sink, schema, compression="zstd", **options) as writer:
        for _ in range(336):
            writer.write_table(group, row_group_size=rows)
    return sink.getvalue()


@pytest.fixture
def files(owner):
    """Upload bytes as one of the conversation's files, as a client does."""

    def add(conversation, name: str, content: bytes) -> None:
        response = owner.client.post(
            f"{owner.conversation_url(conversation)}/files",
            {"files": SimpleUploadedFile(name, content)},
            format="multipart",
        )
        assert response.status_code == 201, response.json()

    return add


def xlsx_bytes(df: pd.DataFrame) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(list(df.columns))
    for row in df.itertuples(index=False):
        sheet.append(list(row))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_tabular_files_are_tables_named_after_their_stems(owner, files):
    conversation = owner.conversation()
    data = sales()
    files(conversation, "Sales Q3 (final).csv", data.to_csv(index=False).encode())
    files(conversation, "targets.xlsx", xlsx_bytes(pd.DataFrame({"region": ["north", "south"], "goal": [30, 5]})))
    files(conversation, "2024-regions.json", json.dumps([{"region": "north", "zone": "N"}]).encode())
    buffer = io.BytesIO()
    pq.write_table(pa.table({"region": ["south"], "manager": ["ann"]}), buffer)
    files(conversation, "managers.parquet", buffer.getvalue())

    answer, _ = ask(
        owner,
        conversation,
        "```sql\n-- name: report\nSELECT s.region, sum(s.amount) AS total, max(t.goal) AS goal, max(j.zone) AS zone, "
        "max(m.manager) AS manager FROM Sales_Q3_final s JOIN targets t USING (region) "
        "LEFT JOIN _2024_regions j USING (region) LEFT JOIN managers m USING (region) "
        "GROUP BY s.region ORDER BY s.region\n```",
    )
    assert answer.events, answer.text
    body = owner.client.get(f"{frames_url(owner, conversation)}/report").json()
    totals = data.groupby("region")["amount"].sum()
    assert body["rows"] == [
        {"region": "north", "total": totals["north"], "goal": 30, "zone": "N", "manager": None},
        {"region": "south", "total": totals["south"], "goal": 5, "zone": None, "manager": "ann"},
    ]


def test_a_file_named_like_a_frame_gets_a_suffix(owner, files):
    conversation = owner.conversation()
    make_frame(owner, conversation, "sales", pd.DataFrame({"x": [1]}))
    files(conversation, "sales.csv", b"y\n2\n")
    answer, _ = ask(owner, conversation, "SELECT * FROM sales, sales_2")
    assert answer.events[0].columns == ["x", "y"]


def test_a_parquet_bomb_is_refused_before_decoding(owner, files):
    bomb = build_parquet_bomb()
    metadata = pq.read_metadata(io.BytesIO(bomb))
    assert 30_000 < len(bomb) < 50_000
    assert metadata.num_rows * metadata.num_columns == 176_160_768
    conversation = owner.conversation()
    files(conversation, "bomb.parquet", bomb)
    started = time.monotonic()
    answer, _ = ask(owner, conversation, "SELECT count(*) FROM bomb")
    assert time.monotonic() - started < 5
    assert "The file 'bomb.parquet' (table bomb) was not read" in answer.text
    assert "176,160,768 rows x 1 columns" in answer.text and "100,000,000" in answer.text
    assert not DataFrame.objects.exists()


def test_a_workbook_that_expands_past_the_limit_is_refused_before_parsing(owner, files, settings):
    settings.DATAFRAMES_XLSX_MAX_BYTES = 8 * 1024 * 1024
    source = zipfile.ZipFile(io.BytesIO(xlsx_bytes(pd.DataFrame({"a": [1]}))))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for member in source.infolist():
            if member.filename != "xl/sharedStrings.xml":
                archive.writestr(member, source.read(member))
        with archive.open("xl/sharedStrings.xml", "w") as strings:  # 16 MiB of XML in about 16 kB of zip
            strings.write(b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">')
            for _ in range(16):
                strings.write(b" " * 1024 * 1024)
            strings.write(b"</sst>")
    assert len(bomb.getvalue()) < 100_000
    conversation = owner.conversation()
    files(conversation, "book.xlsx", bomb.getvalue())
    answer, _ = ask(owner, conversation, "SELECT * FROM book")
    assert "The file 'book.xlsx' (table book) was not read" in answer.text
    assert "more than the limit of 8,388,608" in answer.text
    settings.DATAFRAMES_XLSX_MAX_BYTES = 64 * 1024 * 1024
    answer, _ = ask(owner, conversation, "SELECT * FROM book")
    assert answer.events and answer.events[0].columns == ["a"], answer.text


def test_a_damaged_parquet_file_is_explained(owner, files):
    conversation = owner.conversation()
    files(conversation, "broken.parquet", b"PAR1 this is not parquet")
    answer, _ = ask(owner, conversation, "SELECT * FROM broken")
    assert "was not read: Not a readable Parquet file" in answer.text


# --- tools -------------------------------------------------------------------------------------


def call_tool(name: str, context: ToolContext, arguments: dict):
    async def call():
        try:
            return await registry()[name].run(context, arguments)
        finally:
            # sync_to_async ran the ORM in its own thread: close that connection for the database teardown
            await sync_to_async(connections.close_all)()

    return asyncio.run(call())


@pytest.mark.django_db(transaction=True)
def test_the_tools_run_sql_and_list_frames(owner):
    conversation = owner.conversation()
    make_frame(owner, conversation, "sales", sales())
    context = ToolContext(tenant_id=owner.tenant.id, conversation_id=conversation.id, message_id=None)

    result = call_tool("run_sql", context, {"query": "SELECT max(units) AS m FROM sales", "name": "top"})
    assert result.events == [DataFrameProduced(name="top", rows=1, columns=["m"])]
    assert "| 6 |" in result.text
    refused = call_tool("run_sql", context, {"query": "INSTALL httpfs"})
    assert refused.events == [] and "Only read queries" in refused.text
    assert "needs `query`" in call_tool("run_sql", context, {}).text

    listing = call_tool("list_data_frames", context, {}).text
    assert "- sales (data frame, 6 rows): region string, amount double, units int64" in listing
    assert "- top (data frame, 1 rows): m int64" in listing
    assert registry()["run_sql"].openai_spec()["function"]["parameters"]["required"] == ["query"]


# --- API: list ---------------------------------------------------------------------------------


def test_it_lists_frames_with_samples(owner):
    conversation = owner.conversation()
    ask(owner, conversation, "SELECT 1 AS one")
    make_frame(owner, conversation, "sales", sales())
    response = owner.client.get(f"{frames_url(owner, conversation)}?num_samples=2")
    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None
    first, second = body["items"]
    assert first["name"] == "result_1" and first["message_id"].startswith("msg_")
    assert second == {
        "name": "sales",
        "columns": [
            {"name": "region", "dtype": "string"},
            {"name": "amount", "dtype": "double"},
            {"name": "units", "dtype": "int64"},
        ],
        "row_count": 6,
        "message_id": None,
        "created_at": second["created_at"],
        "samples": expected_records(sales().head(2)),
    }
    assert datetime.datetime.fromisoformat(second["created_at"])
    assert owner.client.get(frames_url(owner, conversation)).json()["items"][1]["samples"] == []


def test_the_list_is_paginated(owner):
    conversation = owner.conversation()
    for name in ("a", "b", "c"):
        make_frame(owner, conversation, name, pd.DataFrame({"x": [1]}))
    page = owner.client.get(f"{frames_url(owner, conversation)}?limit=2").json()
    rest = owner.client.get(f"{frames_url(owner, conversation)}?limit=2&next={page['next']}").json()
    assert [f["name"] for f in page["items"] + rest["items"]] == ["a", "b", "c"]
    assert rest["next"] is None


@pytest.mark.parametrize(
    "query", ["num_samples=-1", "num_samples=101", "num_samples=x", "num_samples=", "limit=0", "next=%%%"]
)
def test_the_list_rejects_bad_parameters(owner, query):
    conversation = owner.conversation()
    response = owner.client.get(f"{frames_url(owner, conversation)}?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert query.split("=")[0] in response.json()["error"]["message"]


# --- API: rows ---------------------------------------------------------------------------------


@pytest.fixture
def wide(owner, settings):
    """A 5,000-row frame in row groups of 1,000, with nulls, NaN, infinities, timestamps and decimals."""
    settings.DATAFRAMES_ROW_GROUP_SIZE = 1000
    rng = np.random.default_rng(7)
    n = 5000
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "group": rng.choice(["a", "b", "c", None], n),
            "score": rng.integers(0, 50, n).astype(float),
            "ratio": rng.normal(size=n),
            "when": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC"),
        }
    )
    df.loc[3, "score"] = np.nan
    table = pa.Table.from_pandas(df, preserve_index=False)
    ratio = table.column("ratio").to_pylist()
    ratio[1], ratio[2], ratio[4] = float("nan"), float("inf"), float("-inf")
    table = table.set_column(3, "ratio", pa.array(ratio, pa.float64()))
    conversation = owner.conversation()
    make_frame(owner, conversation, "wide", table)
    return conversation, table.to_pandas()


def rows_url(owner, conversation, query: str = "") -> str:
    return f"{frames_url(owner, conversation)}/wide?{query}"


@pytest.mark.parametrize(
    ("query", "offset", "limit", "columns"),
    [
        ("", 0, 100, None),
        ("offset=990&limit=25", 990, 25, None),
        ("offset=1999&limit=1002&column_names=when,id", 1999, 1002, ["when", "id"]),
        ("offset=4990&limit=100&column_names=ratio", 4990, 100, ["ratio"]),
        ("offset=5000", 5000, 100, None),
        ("offset=999999&limit=10000", 999999, 10000, None),
    ],
)
def test_slices_equal_pandas(owner, wide, query, offset, limit, columns):
    conversation, df = wide
    response = owner.client.get(rows_url(owner, conversation, query))
    assert response.status_code == 200
    expected = df.iloc[offset : offset + limit]
    if columns:
        expected = expected[columns]
    body = response.json()
    assert body["columns"] == list(expected.columns)
    assert body["rows"] == expected_records(expected)
    assert body["total_rows"] == 5000 and body["offset"] == offset


@pytest.mark.parametrize(
    ("order_by", "keys", "ascending"),
    [
        ("-score", ["score"], [False]),
        ("score", ["score"], [True]),
        ("group,-score", ["group", "score"], [True, False]),
        ("-when", ["when"], [False]),
        ("ratio", ["ratio"], [True]),
    ],
)
def test_ordered_slices_equal_pandas(owner, wide, order_by, keys, ascending):
    conversation, df = wide
    expected = df.sort_values(keys, ascending=ascending, kind="stable", na_position="last")
    for offset, limit in ((0, 100), (1234, 50)):
        query = f"order_by={order_by}&offset={offset}&limit={limit}&column_names=id,group,score"
        body = owner.client.get(rows_url(owner, conversation, query)).json()
        page = expected.iloc[offset : offset + limit][["id", "group", "score"]]
        assert body["rows"] == expected_records(page), (order_by, offset)


@pytest.mark.slow
def test_on_s3_a_slice_reads_the_frame_in_place(owner, s3, settings):
    settings.DATAFRAMES_ROW_GROUP_SIZE = 1000
    rng = np.random.default_rng(11)
    n = 20_000
    df = pd.DataFrame({"id": np.arange(n), "code": [rng.bytes(48).hex() for _ in range(n)]})
    conversation = owner.conversation()
    frame = make_frame(owner, conversation, "big", df)
    size = s3.head_object(Bucket="parley-test", Key=frame.storage_key)["ContentLength"]
    # Too large to copy: a slice is served only if its row groups are read from S3 where the frame lies.
    settings.DATAFRAMES_MAX_FILE_BYTES = size // 4
    url = f"{frames_url(owner, conversation)}/big"

    response = owner.client.get(f"{url}?offset=15995&limit=10")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["rows"] == expected_records(df.iloc[15995:16005])
    assert body["total_rows"] == n
    assert owner.client.get(f"{frames_url(owner, conversation)}?limit=1").json()["items"][0]["name"] == "big"
    # An ordered slice runs in DuckDB over a local copy, which the limit refuses.
    ordered = owner.client.get(f"{url}?order_by=-id&limit=3")
    assert ordered.status_code == 413
    assert ordered.json()["error"]["code"] == "payload_too_large"


def test_json_values_are_safe(owner, wide):
    conversation, df = wide
    rows = owner.client.get(rows_url(owner, conversation, "limit=5")).json()["rows"]
    assert [rows[i]["ratio"] for i in (1, 2, 4)] == [None, None, None]
    assert rows[3]["ratio"] == df["ratio"][3] and math.isfinite(rows[3]["ratio"])
    assert rows[3]["score"] is None
    assert rows[0]["when"] == "2024-01-01T00:00:00+00:00"
    frame_conversation = owner.conversation("decimals")
    table = pa.table(
        {
            "price": pa.array([decimal.Decimal("12.10"), decimal.Decimal("0.01"), None], pa.decimal128(12, 2)),
            "day": pa.array([datetime.date(2024, 2, 29), None, datetime.date(1999, 12, 31)]),
            "blob": pa.array([b"\x00\x01", None, b"hi"]),
        }
    )
    make_frame(owner, frame_conversation, "prices", table)
    body = owner.client.get(f"{frames_url(owner, frame_conversation)}/prices").json()
    assert body["rows"] == [
        {"price": "12.10", "day": "2024-02-29", "blob": "AAE="},
        {"price": "0.01", "day": None, "blob": None},
        {"price": None, "day": "1999-12-31", "blob": "aGk="},
    ]


def test_the_split_csv_and_parquet_formats_equal_pandas(owner, wide):
    conversation, df = wide
    query = "offset=10&limit=30&column_names=id,group,score&order_by=-score"
    expected = df.sort_values("score", ascending=False, kind="stable", na_position="last").iloc[10:40]
    expected = expected[["id", "group", "score"]].reset_index(drop=True)

    split = owner.client.get(rows_url(owner, conversation, query + "&output_format=split")).json()
    assert split["columns"] == ["id", "group", "score"]
    assert split["data"] == [list(row.values()) for row in expected_records(expected)]
    assert split["total_rows"] == 5000 and split["offset"] == 10

    response = owner.client.get(rows_url(owner, conversation, query + "&output_format=csv"))
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="wide.csv"' in response["Content-Disposition"]
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(response.content.decode())), expected, check_dtype=False)

    response = owner.client.get(rows_url(owner, conversation, query + "&output_format=parquet"))
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    parquet = pq.read_table(io.BytesIO(response.content)).to_pandas()
    pd.testing.assert_frame_equal(parquet, expected)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("offset=-1", "offset"),
        ("offset=abc", "offset"),
        ("offset=1.5", "offset"),
        ("order_by=id&offset=100000000000000000000", "offset"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),  # given empty: not the default
        ("output_format=xml", "output_format"),
        ("column_names=id,id", "column_names"),
        ("order_by=-", "order_by"),
    ],
)
def test_bad_row_parameters_are_400_naming_the_field(owner, wide, query, field):
    conversation, _ = wide
    response = owner.client.get(rows_url(owner, conversation, query))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and error["message"].startswith(f"{field}:")


@pytest.mark.parametrize(
    ("query", "field", "column"),
    [
        ("column_names=id,nope", "column_names", "nope"),
        ("order_by=-missing", "order_by", "missing"),
        ("order_by=id,%22x%22%20--", "order_by", '"x" --'),
    ],
)
def test_unknown_columns_are_400_naming_them(owner, wide, query, field, column):
    conversation, _ = wide
    response = owner.client.get(rows_url(owner, conversation, query))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == f"{field}: unknown column {column!r}."
    assert error["details"][field] == column


def test_unknown_and_non_identifier_frames(owner):
    conversation = owner.conversation()
    response = owner.client.get(f"{frames_url(owner, conversation)}/missing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    for name in ("1abc", "a-b", "x" * 65, "%C3%A9t%C3%A9"):
        response = owner.client.get(f"{frames_url(owner, conversation)}/{name}")
        assert response.status_code == 400, name
        assert response.json()["error"]["message"].startswith("data_frame_name:")


@pytest.mark.parametrize("column", ["file_row_number", "File_Row_Number"])
def test_a_column_named_like_the_tiebreak_still_orders(owner, column):
    conversation = owner.conversation()
    make_frame(owner, conversation, "odd", pd.DataFrame({column: [3, 1, 2], "select": ["c", "a", "b"]}))
    body = owner.client.get(f"{frames_url(owner, conversation)}/odd?order_by=-select").json()
    assert [row[column] for row in body["rows"]] == [3, 2, 1]


def test_frame_names_are_identifiers_in_the_database(owner):
    from django.db import IntegrityError, transaction

    conversation = owner.conversation()
    with pytest.raises(IntegrityError), transaction.atomic():
        DataFrame.objects.create(tenant=owner.tenant, conversation=conversation, name="bad name", storage_key="k")


# --- tenancy and deletion ----------------------------------------------------------------------


def test_every_route_of_another_tenant_is_404(owner, outsider):
    theirs = outsider.conversation()
    make_frame(outsider, theirs, "secret", pd.DataFrame({"x": [1]}))
    routes = [
        frames_url(outsider, theirs),
        f"{frames_url(outsider, theirs)}/secret",
        f"{frames_url(outsider, theirs)}/secret?output_format=csv",
        f"{owner.agent_url}/conversations/{theirs.id}/data-frames",
        f"{owner.agent_url}/conversations/{theirs.id}/data-frames/secret",
        f"{owner.base}/agents/{outsider.agent.id}/conversations/{theirs.id}/data-frames/secret",
    ]
    for url in routes:
        response = owner.client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    assert outsider.client.get(f"{frames_url(outsider, theirs)}/secret").status_code == 200


def test_frames_are_deleted_with_their_conversation(owner, django_capture_on_commit_callbacks):
    conversation, kept = owner.conversation(), owner.conversation("kept")
    frames = [make_frame(owner, conversation, name, sales()) for name in ("a", "b")]
    other = make_frame(owner, kept, "c", sales())
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.delete(owner.conversation_url(conversation))
    assert response.status_code == 200
    assert not DataFrame.objects.filter(conversation_id=conversation.id).exists()
    assert not any(default_storage.exists(frame.storage_key) for frame in frames)
    assert default_storage.exists(other.storage_key)
    assert owner.client.get(f"{frames_url(owner, kept)}/c").status_code == 200


# --- admin and schema --------------------------------------------------------------------------


def test_the_admin_shows_shape_and_preview(owner, admin_client):
    conversation = owner.conversation()
    frame = make_frame(owner, conversation, "sales", sales())
    listing = admin_client.get("/admin/dataframes/dataframe/")
    assert listing.status_code == 200
    assert b"6 x 3" in listing.content
    page = admin_client.get(f"/admin/dataframes/dataframe/{frame.id}/change/")
    assert page.status_code == 200
    assert b"<th>region</th><th>amount</th><th>units</th>" in page.content
    assert b"<td>north</td><td>10.5</td><td>1</td>" in page.content


def test_the_schema_documents_every_output_format(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    base = "/tenants/{tenant_id}/api/v2/agents/{agent_id}/conversations/{conversation_id}/data-frames"
    listing = schema["paths"][base]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"num_samples", "limit", "next"}
    rows = schema["paths"][base + "/{data_frame_name}"]["get"]
    assert {p["name"] for p in rows["parameters"]} >= {"offset", "limit", "column_names", "order_by", "output_format"}
    assert set(rows["responses"]["200"]["content"]) == {
        "application/json",
        "text/csv",
        "application/vnd.apache.parquet",
    }


# --- end to end through the messages API -------------------------------------------------------


def post_message(ctx, conversation, content: str):
    response = ctx.client.post(f"{ctx.conversation_url(conversation)}/messages", {"content": content}, format="json")
    assert response.status_code == 200, response.json()
    return response.json()["messages"][1]


@pytest.mark.django_db(transaction=True)
def test_sql_through_the_messages_api_then_list_and_read(owner):
    conversation = owner.conversation()
    rows = ", ".join(f"('{r.region}', {r.amount}, {r.units})" for r in sales().itertuples())
    first = post_message(
        owner,
        conversation,
        "-- name: sales\nSELECT region, amount::DOUBLE AS amount, units::BIGINT AS units "
        f"FROM (VALUES {rows}) AS t(region, amount, units)",
    )
    assert first["status"] == "completed"
    assert "6 rows and 3 columns" in first["content"]

    reply = post_message(
        owner,
        conversation,
        "Totals by region:\n```sql\nSELECT region, sum(amount) AS total, sum(units) AS units\n"
        "FROM sales GROUP BY region ORDER BY total DESC\n```",
    )
    assert reply["status"] == "completed"
    assert "3 rows and 3 columns" in reply["content"] and "saved as the data frame `result_1`" in reply["content"]
    assert "| north | 20.0 | 10 |" in reply["content"]
    stored = Message.objects.get(id=reply["id"])
    assert {"data_frame": {"name": "result_1", "rows": 3, "columns": ["region", "total", "units"]}} in (
        stored.extra_events
    )

    listing = owner.client.get(f"{frames_url(owner, conversation)}?num_samples=100").json()
    assert [(f["name"], f["message_id"]) for f in listing["items"]] == [
        ("sales", first["id"]),
        ("result_1", reply["id"]),
    ]
    expected = (
        sales()
        .groupby("region", as_index=False)
        .agg(total=("amount", "sum"), units=("units", "sum"))
        .sort_values("total", ascending=False, kind="stable")
    )
    assert listing["items"][1]["samples"] == expected_records(expected)
    assert listing["items"][0]["samples"] == expected_records(sales())

    body = owner.client.get(f"{frames_url(owner, conversation)}/sales?order_by=-units&limit=2&offset=1").json()
    assert body["rows"] == expected_records(sales().sort_values("units", ascending=False).iloc[1:3])
    csv_body = owner.client.get(f"{frames_url(owner, conversation)}/result_1?output_format=csv").content.decode()
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(csv_body)), expected.reset_index(drop=True))


@pytest.mark.django_db(transaction=True)
def test_a_refused_query_through_the_messages_api_completes_with_an_explanation(owner):
    conversation = owner.conversation()
    reply = post_message(owner, conversation, "SELECT * FROM read_csv('/etc/passwd')")
    assert reply["status"] == "completed"
    assert reply["content"].startswith("I could not run that query. Refused:")
    assert "root:" not in reply["content"]
    assert not DataFrame.objects.exists()


def test_bulk_delete_removes_the_frames_bytes(owner, django_capture_on_commit_callbacks):
    conversations = [owner.conversation(name) for name in ("a", "b")]
    frames = [make_frame(owner, conversation, "sales", sales()) for conversation in conversations]
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.post(
            f"{owner.base}/conversations/bulk-delete", {"ids": [c.id for c in conversations]}, format="json"
        )
    assert response.status_code == 200 and response.json()["deleted"] == 2
    assert not DataFrame.objects.exists()
    assert not any(default_storage.exists(frame.storage_key) for frame in frames)


@pytest.mark.django_db(transaction=True)
def test_upload_a_csv_ask_sql_and_read_the_frame_as_csv(owner, files):
    conversation = owner.conversation()
    data = sales()
    files(conversation, "sales.csv", data.to_csv(index=False).encode())
    reply = post_message(
        owner,
        conversation,
        "```sql\n-- name: by_region\nSELECT region, sum(amount) AS total, count(*) AS orders\n"
        "FROM sales GROUP BY region ORDER BY region\n```",
    )
    assert reply["status"] == "completed" and "`by_region`" in reply["content"]

    listing = owner.client.get(f"{frames_url(owner, conversation)}?num_samples=2").json()["items"]
    assert [(f["name"], f["row_count"], len(f["samples"])) for f in listing] == [("by_region", 3, 2)]

    response = owner.client.get(f"{frames_url(owner, conversation)}/by_region", {"output_format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    served = pd.read_csv(io.BytesIO(response.content))
    expected = (
        data.groupby("region")
        .agg(total=("amount", "sum"), orders=("amount", "size"))
        .reset_index()
        .sort_values("region")
    )
    pd.testing.assert_frame_equal(served.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)


def test_a_result_over_the_byte_cap_is_refused(owner, settings):
    settings.DATAFRAMES_SQL_MAX_BYTES = 1024 * 1024
    answer, _ = ask(owner, owner.conversation(), "SELECT repeat('x', 1000) AS wide FROM range(5000)")
    assert "larger than 1 MiB" in answer.text
    assert answer.events == [] and not DataFrame.objects.exists()


def test_errors_do_not_reveal_storage_paths(owner, files, settings):
    conversation = owner.conversation()
    files(conversation, "broken.csv", b'a,b\n1,"unterminated\n2,3\n' + bytes(range(256)) * 4)
    answer, _ = ask(owner, conversation, "SELECT sum(a::INTEGER) FROM broken")
    assert answer.events == [] and answer.text  # the query failed, with an explanation
    assert str(settings.MEDIA_ROOT) not in answer.text
    assert "/media/" not in answer.text


def test_duckdbs_settings_do_not_reveal_the_servers_home(owner):
    query = "SELECT name, value FROM duckdb_settings() WHERE name LIKE '%directory%' OR value LIKE '/%'"
    answer, _ = ask(owner, owner.conversation(), query)
    assert "home_directory" in answer.text  # the query ran, and its rows are in the reply
    assert os.path.expanduser("~") not in answer.text


def test_frame_names_are_unique_whatever_their_case(owner):
    conversation = owner.conversation()
    dataframe_create(
        tenant_id=owner.tenant.id, conversation_id=conversation.id, name="sales", table=pa.table({"a": [1]})
    )
    with pytest.raises(Exception, match="already exists"):
        dataframe_create(
            tenant_id=owner.tenant.id, conversation_id=conversation.id, name="Sales", table=pa.table({"a": [2]})
        )
    assert DataFrame.objects.filter(conversation=conversation).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_result_holding_a_nul_is_streamed_and_stored_with_it_replaced(owner):
    """PostgreSQL stores no NUL: the reply replaces it (U+FFFD) as it streams, so the stored reply is the
    streamed one, completed, and says so in `error`; the conversation takes the next message at once."""
    conversation = owner.conversation()
    url = f"{owner.conversation_url(conversation)}/messages"

    response = owner.client.post(url, {"content": "SELECT 'a' || chr(0) || 'b' AS v"}, format="json")

    assert response.status_code == 200, response.json()
    reply = Message.objects.get(pk=response.json()["current_message_id"])
    assert reply.status == "completed" and "| a\ufffdb |" in reply.content and "\x00" not in reply.content
    assert reply.error == NUL_REPLACED
    assert response.json()["messages"][1]["content"] == reply.content
    assert owner.client.post(url, {"content": "thanks"}, format="json").status_code == 200
