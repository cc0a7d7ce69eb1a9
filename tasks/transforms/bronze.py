"""Kafka records to bronze rows, exactly as they came. Pure: no Kafka, no catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

import pyarrow as pa

HEADER_TYPE = pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())])

BRONZE_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", pa.list_(pa.field("element", HEADER_TYPE, nullable=False))),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ingest_run_id", pa.string(), nullable=False),
    ]
)


@dataclass
class RecordColumns:
    """Column buffers of one partition's records, filled by the reader in Kafka order."""

    offsets: list[int] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    headers: list[list[tuple[str, bytes | None]] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)


def records_to_arrow(
    topic: str,
    partition: int,
    records: RecordColumns,
    ingested_at: datetime,
    run_id: str,
) -> pa.Table:
    """One bronze row per record. A record without a broker timestamp gets ``ingested_at``."""
    n = len(records)
    if not (len(records.timestamps_ms) == len(records.keys) == len(records.values) == len(records.headers) == n):
        raise ValueError("record columns have different lengths")
    ingested_us = int(ingested_at.timestamp() * 1_000_000)
    timestamps = [ts * 1000 if ts is not None and ts >= 0 else ingested_us for ts in records.timestamps_ms]
    headers = [
        None if h is None else [{"key": k, "value": v} for k, v in h]
        for h in records.headers
    ] if any(h is not None for h in records.headers) else None
    columns = [
        pa.array([topic] * n, pa.string()) if n else pa.array([], pa.string()),
        pa.array([partition] * n, pa.int32()),
        pa.array(records.offsets, pa.int64()),
        pa.array(timestamps, pa.timestamp("us", tz="UTC")),
        pa.array(records.keys, pa.binary()),
        pa.array(records.values, pa.binary()),
        pa.array(headers, BRONZE_SCHEMA.field("headers").type) if headers is not None
        else pa.nulls(n, BRONZE_SCHEMA.field("headers").type),
        pa.array([ingested_us] * n, pa.timestamp("us", tz="UTC")),
        pa.array([run_id] * n, pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=BRONZE_SCHEMA)


def concat_batches(tables: Sequence[pa.Table]) -> pa.Table:
    if not tables:
        return BRONZE_SCHEMA.empty_table()
    return pa.concat_tables(tables)
