from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import viewsets
from rest_framework.response import Response

from conversations.selectors import conversation_get
from core.pagination import keyset_pagination
from dataframes.formats import csv_text, records_body, split_body
from dataframes.parquet import PARQUET_CONTENT_TYPE, parquet_bytes
from dataframes.selectors import dataframe_get, dataframe_list, dataframe_samples, dataframe_slice
from dataframes.serializers import (
    DataFrameListParamsSerializer,
    DataFrameRecordsSerializer,
    DataFrameRowsParamsSerializer,
    DataFrameSerializer,
    DataFrameSplitSerializer,
)

_ROWS_JSON = PolymorphicProxySerializer(
    component_name="DataFrameRows",
    serializers=[DataFrameRecordsSerializer, DataFrameSplitSerializer],
    resource_type_field_name=None,
)

# What the OpenAPI document shows.
_COLUMNS = ["invoice", "customer", "amount", "issued_on"]
_ROWS = [["INV-2025-031", "acme", "1250.00", "2025-03-03"], ["INV-2025-032", "globex", "980.50", "2025-03-05"]]
DATAFRAME_EXAMPLE = {
    "name": "march_invoices",
    "columns": [
        {"name": "invoice", "dtype": "string"},
        {"name": "customer", "dtype": "string"},
        {"name": "amount", "dtype": "decimal128(12, 2)"},
        {"name": "issued_on", "dtype": "date32[day]"},
    ],
    "row_count": 42,
    "message_id": "msg_01jngb9320er8x3d7fsjzd70va",
    "created_at": "2025-03-04T10:30:05.640118Z",
    "samples": [dict(zip(_COLUMNS, row, strict=True)) for row in _ROWS],
}
_FRAME_NAME = (
    "`data_frame_name` is the frame's name, an identifier: a letter or `_`, then up to 63 letters, digits or `_`."
)


@extend_schema_view(
    list=extend_schema(
        summary="List the conversation's data frames, oldest first",
        description="The tables the agent made in the conversation's replies (with SQL over its files and "
        "frames), oldest first: each with its `columns` (Arrow types), `row_count`, the reply that made it "
        "(`message_id`), and its first `num_samples` rows (0 to 100, default 0) as JSON objects. A page at a "
        "time: `limit` (1 to 100, default 20) and the `next` cursor of the previous page.\n\nErrors: 400 for a "
        "`num_samples` or `limit` out of range or given empty, or a malformed `next` cursor; 404 for a "
        "conversation that is not the tenant's under this agent.",
        parameters=[DataFrameListParamsSerializer],
        examples=[OpenApiExample("A frame with two sample rows", value=DATAFRAME_EXAMPLE, response_only=True)],
    ),
    retrieve=extend_schema(
        summary="Read a data frame's rows: a slice, some columns, an order, in one of four formats",
        description=f"Rows of a data frame. {_FRAME_NAME} `offset` (default 0) and `limit` (1 to 10,000, "
        "default 100) choose the rows; `column_names` (comma-separated) the columns, in the order given "
        "(default: all); `order_by` (comma-separated, `-column` for descending, nulls last) sorts the whole "
        "frame before the slice is taken, and ties keep the frame's order, so that pages neither repeat nor "
        "skip rows. `output_format`: `records` (JSON, one object per row; the default), `split` (JSON, a list "
        "per row in column order), `csv` (text/csv, a header line first) or `parquet`; CSV and Parquet come as "
        "an attachment named after the frame. In JSON, values are exact: NaN and infinities are null, dates "
        "and times ISO 8601, decimals strings, binary values base64. `total_rows` counts the whole frame.\n\n"
        "Errors: 400 for a `data_frame_name` that is not an identifier, an unknown column, a column listed "
        "twice, a `limit` or `offset` out of range, an unknown `output_format`, or a parameter given empty; "
        "404 for a conversation that is not the tenant's under this agent, or no frame of that name in it.",
        parameters=[
            DataFrameRowsParamsSerializer,
            OpenApiParameter(
                "data_frame_name",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                description="The frame's name (case-sensitive).",
            ),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                _ROWS_JSON, description="`records` (default) or `split`; values are JSON-safe."
            ),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="`output_format=csv`."),
            (200, PARQUET_CONTENT_TYPE): OpenApiResponse(OpenApiTypes.BINARY, description="`output_format=parquet`."),
        },
        examples=[
            OpenApiExample(
                "Records",
                value={
                    "columns": _COLUMNS,
                    "rows": [dict(zip(_COLUMNS, row, strict=True)) for row in _ROWS],
                    "total_rows": 42,
                    "offset": 0,
                },
                response_only=True,
                media_type="application/json",
            ),
            OpenApiExample(
                "Split",
                value={"columns": _COLUMNS, "data": _ROWS, "total_rows": 42, "offset": 0},
                response_only=True,
                media_type="application/json",
            ),
            OpenApiExample(
                "CSV",
                value="invoice,customer,amount,issued_on\n" + "".join(",".join(row) + "\n" for row in _ROWS),
                response_only=True,
                media_type="text/csv",
            ),
        ],
    ),
)
class DataFrameViewSet(viewsets.GenericViewSet):
    serializer_class = DataFrameSerializer
    pagination_class = keyset_pagination("created_at", "id")

    def list(self, request, tenant_id, agent_id, conversation_id):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        params = DataFrameListParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        page = self.paginate_queryset(dataframe_list(conversation=conversation))
        rows = params.validated_data["num_samples"]
        samples = {}
        if rows:
            for frame in page:
                table = dataframe_samples(frame=frame, rows=rows)
                samples[frame.id] = records_body(table, total_rows=frame.row_count, offset=0)["rows"]
        return self.get_paginated_response(DataFrameSerializer(page, many=True, context={"samples": samples}).data)

    def retrieve(self, request, tenant_id, agent_id, conversation_id, data_frame_name):
        conversation = conversation_get(tenant=request.tenant, agent_id=agent_id, conversation_id=conversation_id)
        frame = dataframe_get(conversation=conversation, name=data_frame_name)
        params = DataFrameRowsParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        options = params.validated_data
        table = dataframe_slice(
            frame=frame,
            offset=options["offset"],
            limit=options["limit"],
            column_names=options.get("column_names") or None,
            order_by=options.get("order_by") or None,
        )
        output_format = options["output_format"]
        if output_format == "csv":
            response = HttpResponse(csv_text(table), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="{frame.name}.csv"'
            return response
        if output_format == "parquet":
            response = HttpResponse(parquet_bytes(table), content_type=PARQUET_CONTENT_TYPE)
            response["Content-Disposition"] = f'attachment; filename="{frame.name}.parquet"'
            return response
        render = split_body if output_format == "split" else records_body
        return Response(render(table, total_rows=frame.row_count, offset=options["offset"]))
