"""Every Iceberg table of the lakehouse: its name, schema, partition spec and location, in one place.

Names follow ``<layer>.<domain>_<entity>_<type>``. Locations are set explicitly from the layer's
bucket, because not every catalog server honours a namespace's ``location`` property.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

from tasks.settings import NAMESPACES, Settings


@dataclass(frozen=True)
class TableSpec:
    """What a table is; creating it is :func:`ensure_table`'s job."""

    identifier: str
    schema: Schema
    partition_spec: PartitionSpec = field(default=UNPARTITIONED_PARTITION_SPEC)
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layer, _, name = self.identifier.partition(".")
        if layer not in NAMESPACES or not name or name.count("_") < 1:
            raise ValueError(f"table name {self.identifier!r} must be <layer>.<domain>_<entity>_<type>")

    @property
    def layer(self) -> str:
        return self.identifier.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.identifier.split(".", 1)[1]

    def location(self, settings: Settings) -> str:
        return f"{settings.layer_location(self.layer)}/{self.name}"


_HEADER = StructType(
    NestedField(101, "key", StringType(), required=True),
    NestedField(102, "value", BinaryType(), required=False),
)

BRONZE_CONVERSION_EVENTS_RAW = TableSpec(
    identifier="bronze.conversion_events_raw",
    schema=Schema(
        NestedField(1, "topic", StringType(), required=True),
        NestedField(2, "partition", IntegerType(), required=True),
        NestedField(3, "offset", LongType(), required=True),
        NestedField(4, "kafka_timestamp", TimestamptzType(), required=True),
        NestedField(5, "key", BinaryType(), required=False),
        NestedField(6, "value", BinaryType(), required=False),
        NestedField(7, "headers", ListType(100, _HEADER, element_required=True), required=False),
        NestedField(8, "ingested_at", TimestamptzType(), required=True),
        NestedField(9, "ingest_run_id", StringType(), required=True),
        identifier_field_ids=[1, 2, 3],
    ),
    partition_spec=PartitionSpec(
        PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="kafka_day")
    ),
    properties={
        "write.parquet.compression-codec": "zstd",
        # Exactly once: a conflicting commit must fail, not be re-applied on top of the winner.
        "commit.retry.num-retries": "0",
    },
)

_EXACTLY_ONCE = {
    "write.parquet.compression-codec": "zstd",
    "commit.retry.num-retries": "0",
}

# v1 columns; schema_version 2's region and cache_hit are added by schema evolution when the
# first v2 event arrives (see V2_FACT_COLUMNS), so old data files are never rewritten.
SILVER_FACT_CONVERSIONS = TableSpec(
    identifier="silver.fact_conversions",
    schema=Schema(
        NestedField(1, "event_id", StringType(), required=True),
        NestedField(2, "event_type", StringType(), required=False),
        NestedField(3, "schema_version", IntegerType(), required=False),
        NestedField(4, "occurred_at", TimestamptzType(), required=False),
        NestedField(5, "event_date", DateType(), required=False),
        NestedField(6, "user_id", StringType(), required=False),
        NestedField(7, "user_plan", StringType(), required=False),
        NestedField(8, "user_country", StringType(), required=False),
        NestedField(9, "direction", StringType(), required=False),
        NestedField(10, "input", StringType(), required=False),
        NestedField(11, "output", StringType(), required=False),
        NestedField(12, "success", BooleanType(), required=False),
        NestedField(13, "error_code", StringType(), required=False),
        NestedField(14, "latency_ms", DoubleType(), required=False),
        NestedField(15, "endpoint", StringType(), required=False),
        NestedField(16, "http_status", IntegerType(), required=False),
        NestedField(17, "client", StringType(), required=False),
        NestedField(18, "numeral_value", IntegerType(), required=False),
        NestedField(19, "source_topic", StringType(), required=False),
        NestedField(20, "source_partition", IntegerType(), required=False),
        NestedField(21, "source_offset", LongType(), required=False),
        NestedField(22, "kafka_timestamp", TimestamptzType(), required=False),
        NestedField(23, "bronze_snapshot_id", LongType(), required=False),
        identifier_field_ids=[1],
    ),
    partition_spec=PartitionSpec(
        PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="occurred_day")
    ),
    properties=_EXACTLY_ONCE,
)
V2_FACT_COLUMNS = (("region", StringType()), ("cache_hit", BooleanType()))

SILVER_CONVERSION_EVENTS_REJECTED = TableSpec(
    identifier="silver.conversion_events_rejected",
    schema=Schema(
        NestedField(1, "reason_codes", ListType(100, StringType(), element_required=False), required=False),
        NestedField(2, "reject_detail", StringType(), required=False),
        NestedField(3, "value", BinaryType(), required=False),
        NestedField(4, "source_topic", StringType(), required=False),
        NestedField(5, "source_partition", IntegerType(), required=False),
        NestedField(6, "source_offset", LongType(), required=False),
        NestedField(7, "kafka_timestamp", TimestamptzType(), required=False),
        NestedField(8, "bronze_snapshot_id", LongType(), required=False),
    ),
    partition_spec=PartitionSpec(
        PartitionField(source_id=7, field_id=1000, transform=DayTransform(), name="kafka_day")
    ),
    properties=_EXACTLY_ONCE,
)

SILVER_DIM_USERS = TableSpec(
    identifier="silver.dim_users",
    schema=Schema(
        NestedField(1, "user_sk", LongType(), required=False),
        NestedField(2, "user_id", StringType(), required=False),
        NestedField(3, "user_plan", StringType(), required=False),
        NestedField(4, "user_country", StringType(), required=False),
        NestedField(5, "valid_from", TimestamptzType(), required=False),
        NestedField(6, "valid_to", TimestamptzType(), required=False),
        NestedField(7, "is_current", BooleanType(), required=False),
    ),
    properties=_EXACTLY_ONCE,
)

def _columns(*fields: tuple[str, object]) -> Schema:
    """A schema of optional columns with ids 1..n, in order."""
    return Schema(*(NestedField(i, name, kind, required=False) for i, (name, kind) in enumerate(fields, start=1)))


def _identity(schema: Schema, column: str) -> PartitionSpec:
    source = schema.find_field(column).field_id
    return PartitionSpec(PartitionField(source_id=source, field_id=1000, transform=IdentityTransform(), name=column))


_DAILY_METRICS = _columns(
    ("event_date", DateType()), ("direction", StringType()), ("requests", LongType()), ("successes", LongType()),
    ("failures", LongType()), ("success_rate", DoubleType()), ("unique_users", LongType()),
    ("anonymous_requests", LongType()), ("avg_latency_ms", DoubleType()), ("p50_latency_ms", DoubleType()),
    ("p95_latency_ms", DoubleType()), ("p99_latency_ms", DoubleType()),
)
_PLAN_METRICS = _columns(
    ("event_date", DateType()), ("user_plan", StringType()), ("requests", LongType()), ("successes", LongType()),
    ("unique_users", LongType()),
)
_USER_DAILY = _columns(
    ("user_id", StringType()), ("event_date", DateType()), ("first_seen_at", TimestamptzType()),
    ("last_seen_at", TimestamptzType()), ("requests", LongType()), ("successes", LongType()), ("failures", LongType()),
    ("to_roman_requests", LongType()), ("from_roman_requests", LongType()),
)
_HOURLY = _columns(
    ("event_hour", TimestamptzType()), ("endpoint", StringType()), ("http_status", IntegerType()),
    ("requests", LongType()), ("avg_latency_ms", DoubleType()), ("p95_latency_ms", DoubleType()),
    ("event_date", DateType()),
)

GOLD_DIM_DATE = TableSpec(
    identifier="gold.dim_date",
    schema=_columns(
        ("date", DateType()), ("year", IntegerType()), ("quarter", IntegerType()), ("month", IntegerType()),
        ("day", IntegerType()), ("iso_week", IntegerType()), ("day_of_week", IntegerType()),
        ("is_weekend", BooleanType()),
    ),
    properties=_EXACTLY_ONCE,
)
GOLD_DAILY_CONVERSION_METRICS = TableSpec(
    identifier="gold.daily_conversion_metrics", schema=_DAILY_METRICS,
    partition_spec=_identity(_DAILY_METRICS, "event_date"), properties=_EXACTLY_ONCE,
)
GOLD_DAILY_PLAN_METRICS = TableSpec(
    identifier="gold.daily_plan_metrics", schema=_PLAN_METRICS,
    partition_spec=_identity(_PLAN_METRICS, "event_date"), properties=_EXACTLY_ONCE,
)
# (user_id, event_date) partial aggregates of the user summary: rebuilt per touched day like the
# daily tables, so the summary of touched users never rescans their facts.
GOLD_USER_DAILY_ACTIVITY = TableSpec(
    identifier="gold.user_daily_activity", schema=_USER_DAILY,
    partition_spec=_identity(_USER_DAILY, "event_date"), properties=_EXACTLY_ONCE,
)
GOLD_USER_ACTIVITY_SUMMARY = TableSpec(
    identifier="gold.user_activity_summary",
    schema=_columns(
        ("user_id", StringType()), ("first_seen_at", TimestamptzType()), ("last_seen_at", TimestamptzType()),
        ("requests", LongType()), ("successes", LongType()), ("failures", LongType()), ("active_days", LongType()),
        ("to_roman_requests", LongType()), ("from_roman_requests", LongType()), ("current_plan", StringType()),
        ("current_country", StringType()),
    ),
    properties=_EXACTLY_ONCE,
)
GOLD_HOURLY_API_USAGE = TableSpec(
    identifier="gold.hourly_api_usage", schema=_HOURLY,
    partition_spec=_identity(_HOURLY, "event_date"), properties=_EXACTLY_ONCE,
)
# Data science (tasks/transforms/anomalies.py, tasks/transforms/forecast.py): per hour and direction,
# each metric with its robust baseline, score and flag; baseline_weeks 0 = the short-history fallback.
_ANOMALIES = _columns(
    ("event_hour", TimestamptzType()), ("direction", StringType()),
    ("requests", LongType()), ("requests_baseline", DoubleType()), ("requests_score", DoubleType()),
    ("requests_anomaly", BooleanType()),
    ("error_rate", DoubleType()), ("error_rate_baseline", DoubleType()), ("error_rate_score", DoubleType()),
    ("error_rate_anomaly", BooleanType()),
    ("p95_latency_ms", DoubleType()), ("p95_latency_ms_baseline", DoubleType()),
    ("p95_latency_ms_score", DoubleType()), ("p95_latency_ms_anomaly", BooleanType()),
    ("is_anomaly", BooleanType()), ("baseline_weeks", IntegerType()),
)
GOLD_HOURLY_ANOMALIES = TableSpec(
    identifier="gold.hourly_anomalies", schema=_ANOMALIES,
    partition_spec=PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=DayTransform(), name="event_day")),
    properties=_EXACTLY_ONCE,
)
GOLD_CAPACITY_FORECAST = TableSpec(
    identifier="gold.capacity_forecast",
    schema=_columns(
        ("direction", StringType()), ("metric", StringType()), ("forecast_date", DateType()),
        ("horizon_days", IntegerType()), ("forecast", DoubleType()), ("lower_80", DoubleType()),
        ("upper_80", DoubleType()), ("lower_95", DoubleType()), ("upper_95", DoubleType()),
        ("model", StringType()), ("history_through", DateType()),
    ),
    properties=_EXACTLY_ONCE,
)
GOLD_FORECAST_ACCURACY = TableSpec(
    identifier="gold.forecast_accuracy",
    schema=_columns(
        ("direction", StringType()), ("metric", StringType()), ("model", StringType()), ("holdout_days", IntegerType()),
        ("mape", DoubleType()), ("coverage_80", DoubleType()), ("coverage_95", DoubleType()),
        ("history_through", DateType()),
    ),
    properties=_EXACTLY_ONCE,
)
DATA_SCIENCE_TABLES = (GOLD_HOURLY_ANOMALIES, GOLD_CAPACITY_FORECAST, GOLD_FORECAST_ACCURACY)

GOLD_TABLES = (
    GOLD_DIM_DATE, GOLD_DAILY_CONVERSION_METRICS, GOLD_DAILY_PLAN_METRICS, GOLD_USER_DAILY_ACTIVITY,
    GOLD_USER_ACTIVITY_SUMMARY, GOLD_HOURLY_API_USAGE, *DATA_SCIENCE_TABLES,
)

ALL_TABLES: tuple[TableSpec, ...] = (
    BRONZE_CONVERSION_EVENTS_RAW,
    SILVER_FACT_CONVERSIONS,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    *GOLD_TABLES,
)


# Data quality (tasks/quality/): one row per expectation per evaluated batch; snapshot_id is the
# snapshot checked (silver: the bronze snapshot the batch promotes up to; gold: the table's commit).
AUDIT_DQ_RESULTS = TableSpec(
    identifier="audit.dq_results",
    schema=_columns(
        ("run_id", StringType()), ("flow", StringType()), ("table_name", StringType()), ("snapshot_id", LongType()),
        ("suite", StringType()), ("expectation", StringType()), ("expectation_type", StringType()),
        ("severity", StringType()), ("success", BooleanType()), ("observed_value", StringType()),
        ("element_count", LongType()), ("unexpected_count", LongType()), ("unexpected_percent", DoubleType()),
        ("evaluated_at", TimestamptzType()),
    ),
    partition_spec=PartitionSpec(PartitionField(source_id=14, field_id=1000, transform=DayTransform(), name="evaluated_day")),
    properties={"write.parquet.compression-codec": "zstd"},
)


# Lineage (tasks/lineage/): every OpenLineage run event of every flow, one commit per run; the
# lakehouse's own copy whatever the transport. `event` is the event's JSON as sent.
AUDIT_LINEAGE_EVENTS = TableSpec(
    identifier="audit.lineage_events",
    schema=_columns(
        ("event_time", TimestamptzType()), ("event_type", StringType()), ("run_id", StringType()),
        ("job_namespace", StringType()), ("job_name", StringType()), ("parent_run_id", StringType()),
        ("inputs", ListType(100, StringType(), element_required=False)),
        ("outputs", ListType(101, StringType(), element_required=False)),
        ("output_snapshots", StringType()), ("event", StringType()),
    ),
    partition_spec=PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=DayTransform(), name="event_day")),
    properties={"write.parquet.compression-codec": "zstd"},
)

AUDIT_TABLES = (AUDIT_DQ_RESULTS, AUDIT_LINEAGE_EVENTS)
# Every table maintenance compacts and expires: the medallion tables and the audit appends, which
# grow by one small commit per flow run.
MAINTAINED_TABLES: tuple[TableSpec, ...] = (*ALL_TABLES, *AUDIT_TABLES)


def ensure_table(catalog: Catalog, settings: Settings, spec: TableSpec) -> Table:
    """Load the table, creating it at its layer's location if it does not exist yet."""
    try:
        return catalog.load_table(spec.identifier)
    except NoSuchTableError:
        pass
    try:
        catalog.create_namespace(spec.layer, {"location": settings.layer_location(spec.layer)})
    except NamespaceAlreadyExistsError:
        pass
    try:
        return catalog.create_table(
            spec.identifier,
            schema=spec.schema,
            partition_spec=spec.partition_spec,
            location=spec.location(settings),
            properties=spec.properties,
        )
    except TableAlreadyExistsError:  # a concurrent creator won
        return catalog.load_table(spec.identifier)
