"""Every Iceberg table of the lakehouse: its name, schema, partition spec and location, in one place.

Names follow ``<layer>.<domain>_<entity>_<type>``. Locations are set explicitly from the layer's
bucket, because not every catalog server honours a namespace's ``location`` property.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    BinaryType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    StructType,
    TimestamptzType,
)

from tasks.settings import LAYERS, Settings


@dataclass(frozen=True)
class TableSpec:
    """What a table is; creating it is :func:`ensure_table`'s job."""

    identifier: str
    schema: Schema
    partition_spec: PartitionSpec = field(default=UNPARTITIONED_PARTITION_SPEC)
    properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layer, _, name = self.identifier.partition(".")
        if layer not in LAYERS or not name or name.count("_") < 1:
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

ALL_TABLES: tuple[TableSpec, ...] = (BRONZE_CONVERSION_EVENTS_RAW,)


def ensure_table(catalog: Catalog, settings: Settings, spec: TableSpec) -> Table:
    """Load the table, creating it at its layer's location if it does not exist yet."""
    try:
        return catalog.load_table(spec.identifier)
    except NoSuchTableError:
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
