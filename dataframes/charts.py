"""Charts the agent draws of a data frame: a bar, line or scatter chart of one column against another,
rendered to PNG by matplotlib (its Figure API and Agg canvas: no display, no global pyplot state, safe in
worker threads) and stored as a file of the conversation like an export (dataframes.exports). The builtin
engine's SQL mode draws one on `-- chart: bar x=<column> y=<column>`; engines with a tool loop call
`chart_data_frame` (dataframes.tools)."""

from __future__ import annotations

import decimal
import io
import re

import pyarrow as pa
from django.core.files.base import ContentFile

from core.errors import Invalid
from files.models import File, Origin
from files.services import file_create_many
from tenants.models import Tenant

CHART_KINDS = ("bar", "line", "scatter")
CHART_COMMENT = re.compile(r"^\s*--\s*chart\s*:\s*(\S+)((?:[ \t]+\w+=\S+)*)[ \t]*$", re.MULTILINE | re.IGNORECASE)
WIDTH, HEIGHT, DPI = 800, 500, 100  # pixels
MAX_POINTS = 10_000


def chart_request_in(query: str) -> tuple[str, dict[str, str]] | None:
    """(kind, {"x": ..., "y": ...}) of a `-- chart: <kind> x=<column> y=<column>` comment, if any."""
    match = CHART_COMMENT.search(query)
    if match is None:
        return None
    options = dict(option.split("=", 1) for option in match.group(2).split())
    return match.group(1).lower(), options


def chart_png(table: pa.Table, *, kind: str, x: str, y: str, title: str) -> bytes:
    """The chart as PNG bytes (WIDTH x HEIGHT); Invalid for an unknown kind, a column that is not in the
    table, or a y column that is not numeric."""
    if kind not in CHART_KINDS:
        raise Invalid(f"`{kind}` is not one of {', '.join(CHART_KINDS)}.")
    for column in (x, y):
        if column not in table.column_names:
            raise Invalid(f"No column `{column}`; the columns are {', '.join(table.column_names)}.")
    kind_of_y = table.schema.field(y).type
    if not (pa.types.is_integer(kind_of_y) or pa.types.is_floating(kind_of_y) or pa.types.is_decimal(kind_of_y)):
        raise Invalid(f"`{y}` is not a numeric column.")
    from matplotlib.figure import Figure  # (imported by the first chart only)

    xs, ys = table.column(x).to_pylist()[:MAX_POINTS], table.column(y).to_pylist()[:MAX_POINTS]
    ys = [float(value) if isinstance(value, decimal.Decimal) else value for value in ys]
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    axes = figure.subplots()
    if kind == "bar":
        axes.bar([str(value) for value in xs], [value or 0 for value in ys])
    elif kind == "line":
        axes.plot(xs, ys)
    else:
        axes.scatter(xs, ys)
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def dataframe_chart(
    *, tenant_id: str, conversation_id: str, message_id: str | None, name: str, table: pa.Table, kind: str, x: str,
    y: str,
) -> File:  # fmt: skip
    """Draw the chart and store it as `<name>-<kind>.png` in the conversation (Invalid, or an
    ApplicationError such as 413 over the quota, stores nothing)."""
    png = chart_png(table, kind=kind, x=x, y=y, title=f"{name}: {y} by {x}")
    tenant = Tenant.objects.get(pk=tenant_id)
    upload = ContentFile(png, name=f"{name}-{kind}.png")
    (file,) = file_create_many(
        tenant=tenant, conversation_id=conversation_id, uploads=[upload], origin=Origin.AGENT, message_id=message_id
    )
    return file
