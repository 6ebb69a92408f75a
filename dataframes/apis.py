from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema, extend_schema_view
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


@extend_schema_view(
    list=extend_schema(
        summary="List the conversation's data frames, oldest first",
        parameters=[DataFrameListParamsSerializer],
    ),
    retrieve=extend_schema(
        summary="Read a data frame's rows: a slice, some columns, an order, in one of four formats",
        parameters=[DataFrameRowsParamsSerializer],
        responses={
            (200, "application/json"): OpenApiResponse(
                _ROWS_JSON, description="`records` (default) or `split`; values are JSON-safe."
            ),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="`output_format=csv`."),
            (200, PARQUET_CONTENT_TYPE): OpenApiResponse(OpenApiTypes.BINARY, description="`output_format=parquet`."),
        },
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
