from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from core.fields import QueryParamsSerializer
from dataframes.models import DataFrame

OUTPUT_FORMATS = ["records", "split", "csv", "parquet"]


class DataFrameListParamsSerializer(QueryParamsSerializer):
    num_samples = serializers.IntegerField(
        min_value=0, max_value=settings.DATAFRAMES_SAMPLES_MAX, default=0, help_text="Sample rows per frame."
    )


def _names(value: str, parameter: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise serializers.ValidationError(f"{sorted(duplicates)[0]!r} is listed more than once.")
    return names


class DataFrameRowsParamsSerializer(QueryParamsSerializer):
    offset = serializers.IntegerField(
        min_value=0, max_value=2**63 - 1, default=0, help_text="Index of the first row to return."
    )
    limit = serializers.IntegerField(
        min_value=1,
        max_value=settings.DATAFRAMES_PAGE_MAX_ROWS,
        default=100,
        help_text=f"Rows to return, 1 to {settings.DATAFRAMES_PAGE_MAX_ROWS}.",
    )
    column_names = serializers.CharField(
        required=False, allow_blank=True, help_text="Comma-separated columns to return (default: all, in order)."
    )
    order_by = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Comma-separated sort keys: `col` ascending, `-col` descending; nulls last.",
    )
    output_format = serializers.ChoiceField(
        choices=OUTPUT_FORMATS,
        default="records",
        help_text="`records` (JSON objects), `split` (JSON columns + lists), `csv` (text/csv) or `parquet`.",
    )

    def validate_column_names(self, value: str) -> list[str]:
        return _names(value, "column_names")

    def validate_order_by(self, value: str) -> list[tuple[str, bool]]:
        keys = [
            (name[1:].strip(), True) if name.startswith("-") else (name, False) for name in _names(value, "order_by")
        ]
        for name, _ in keys:
            if not name:
                raise serializers.ValidationError("A sort key needs a column name after '-'.")
        return keys


class ColumnSerializer(serializers.Serializer):
    name = serializers.CharField()
    dtype = serializers.CharField(help_text="Arrow type, e.g. `int64`, `string`, `timestamp[us, tz=UTC]`.")


class DataFrameSerializer(serializers.ModelSerializer):
    columns = ColumnSerializer(many=True, source="schema")
    message_id = serializers.CharField(allow_null=True, help_text="The assistant message that produced it.")
    samples = serializers.SerializerMethodField()

    class Meta:
        model = DataFrame
        fields = ["name", "columns", "row_count", "message_id", "created_at", "samples"]
        read_only_fields = fields

    def get_samples(self, frame: DataFrame) -> list[dict]:
        """The first `num_samples` rows as JSON objects (prepared by the view)."""
        return self.context.get("samples", {}).get(frame.id, [])


class DataFrameRecordsSerializer(serializers.Serializer):
    columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.DictField(), help_text="One object per row, column -> value.")
    total_rows = serializers.IntegerField(help_text="Rows in the whole frame.")
    offset = serializers.IntegerField()


class DataFrameSplitSerializer(serializers.Serializer):
    columns = serializers.ListField(child=serializers.CharField())
    data = serializers.ListField(child=serializers.ListField(), help_text="One list per row, in column order.")
    total_rows = serializers.IntegerField(help_text="Rows in the whole frame.")
    offset = serializers.IntegerField()
