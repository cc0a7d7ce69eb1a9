"""What every check reads with: the tables verify reconciles, the :class:`Context` that loads them
(and bronze's offsets) once per run, and helpers for table rows, snapshot summaries and details."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from tasks.commits import latest_property, upstream_key
from tasks.tables import (
    BRONZE_CONVERSION_EVENTS_RAW,
    GOLD_DAILY_CONVERSION_METRICS,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
)
from tasks.verify.report import Options

if TYPE_CHECKING:
    from tasks.verify.kafka_gaps import KafkaGapProbe

BRONZE = BRONZE_CONVERSION_EVENTS_RAW.identifier
FACTS = SILVER_FACT_CONVERSIONS.identifier
REJECTED = SILVER_CONVERSION_EVENTS_REJECTED.identifier
DIM_USERS = SILVER_DIM_USERS.identifier
DAILY = GOLD_DAILY_CONVERSION_METRICS.identifier

Key = tuple[str, int]  # (topic, partition)
EMPTY = np.empty(0, dtype=np.int64)


class Context:
    """Tables loaded once, and bronze offsets read once per snapshot, for one verify run."""

    def __init__(self, catalog: Catalog, options: Options, kafka: "KafkaGapProbe | None" = None):
        self.catalog = catalog
        self.options = options
        self.kafka = kafka
        self._tables: dict[str, Table | None] = {}
        self._offsets: dict[int, tuple[dict[Key, np.ndarray], int]] = {}

    def table(self, name: str) -> Table | None:
        if name not in self._tables:
            try:
                self._tables[name] = self.catalog.load_table(name)
            except (NoSuchTableError, NoSuchNamespaceError):
                self._tables[name] = None
        return self._tables[name]

    def bronze_offsets(self, snapshot_id: int) -> dict[Key, np.ndarray]:
        """Sorted offsets (repeats kept) per partition of bronze at ``snapshot_id``."""
        if snapshot_id not in self._offsets:
            bronze = self.table(BRONZE)
            assert bronze is not None
            self._offsets[snapshot_id] = offsets_by_partition(bronze, snapshot_id, "topic", "partition", "offset")
        return self._offsets[snapshot_id][0]


def has_data(table: Table | None) -> bool:
    return table is not None and table.current_snapshot() is not None


def current_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot is not None else None


def offsets_by_partition(table: Table, snapshot_id: int | None, topic: str, partition: str,
                          offset: str) -> tuple[dict[Key, np.ndarray], int]:
    """Per (topic, partition) the sorted offsets (repeats kept) of ``table`` at ``snapshot_id``,
    read in batches with only the three columns; and how many rows lack one of them."""
    if snapshot_id is None:
        return {}, 0
    scan = table.scan(snapshot_id=snapshot_id, selected_fields=(topic, partition, offset))
    chunks: dict[Key, list[np.ndarray]] = defaultdict(list)
    incomplete = 0
    for batch in scan.to_arrow_batch_reader():
        if batch.num_rows == 0:
            continue
        rows = pa.Table.from_batches([batch])
        complete = rows.drop_null()
        incomplete += rows.num_rows - complete.num_rows
        if complete.num_rows == 0:
            continue
        topics, partitions = complete.column(topic), complete.column(partition)
        if pc.count_distinct(topics).as_py() == 1 and pc.count_distinct(partitions).as_py() == 1:
            key = (topics[0].as_py(), int(partitions[0].as_py()))
            chunks[key].append(complete.column(offset).to_numpy().astype(np.int64, copy=False))
            continue
        grouped = complete.group_by([topic, partition]).aggregate([(offset, "list")])
        for t, p, offs in zip(grouped.column(topic).to_pylist(), grouped.column(partition).to_pylist(),
                              grouped.column(f"{offset}_list")):
            chunks[(t, int(p))].append(offs.values.to_numpy().astype(np.int64, copy=False))
    return {key: np.sort(np.concatenate(parts)) for key, parts in chunks.items()}, incomplete


def summary(snapshot: Snapshot) -> dict[str, str]:
    return dict(snapshot.summary.additional_properties) if snapshot.summary is not None else {}


def lineage(table: Table) -> list[Snapshot]:
    """The current snapshot's retained ancestry, oldest first."""
    chain = list(ancestors_of(table.current_snapshot(), table.metadata))
    chain.reverse()
    return chain


def parse_json(raw: str | None) -> object:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def fmt_key(key: Key) -> str:
    return f"{key[0]}[{key[1]}]"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def watermark(table: Table | None, upstream: str) -> int | None:
    if not has_data(table):
        return None
    raw = latest_property(table, upstream_key(upstream))
    return int(raw) if raw is not None else None
