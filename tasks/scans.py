"""Reads of Iceberg tables into Daft: what an upstream committed since a watermark, and history slices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import daft
import pyarrow as pa
import pyarrow.compute as pc
from daft import DataFrame, col
from pyiceberg.expressions import In
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_between

from tasks.commits import RUN_ID_KEY


@dataclass(frozen=True)
class Increment:
    """The append snapshots of an upstream table in (after, upto], oldest first."""

    after: int | None
    upto: int
    snapshot_ids: tuple[int, ...]
    files: tuple[str, ...]
    partitions: tuple[tuple, ...]  # each file's partition values, in files order
    run_ids: dict[str, int]  # ingest run id -> the snapshot that committed it


def pending_range(upstream: Table, watermarks: list[int | None], head: int | None = None
                  ) -> tuple[int | None, int] | None:
    """(after, upto) of the upstream snapshots that some downstream table has not promoted yet;
    None when every downstream table is at upstream's current snapshot (or at ``head``, the
    newest upstream snapshot the caller may read).

    Downstream tables commit one after another, each recording the upstream snapshot it reached.
    When they disagree, a run crashed between their commits: the range is exactly the interrupted
    one, so no table promotes anything twice.
    """
    marks = set(watermarks)
    known = sorted((m for m in marks if m is not None), key=lambda sid: _sequence(upstream, sid))
    if head is None:
        current = upstream.current_snapshot()
        head = current.snapshot_id if current is not None else None
    if len(marks) > 1:
        upto = known[-1]
    elif head is None or head in marks:
        return None
    else:
        upto = head
    after = None if None in marks else known[0]
    if len(marks) == 1 and not _appends_between(upstream, after, upto):
        return None  # only maintenance (compaction, expiry) since: nothing new to promote
    return after, upto


@dataclass(frozen=True)
class AppendSize:
    """One upstream append snapshot and what it added, from its summary."""

    snapshot_id: int
    records: int
    bytes: int


def first_batch_end(appends: list[AppendSize], max_records: int, max_bytes: int) -> int:
    """The last snapshot of the first bounded batch: the longest run of appends, oldest first,
    within both bounds, and always at least one (a snapshot is never split, so a larger one goes
    alone).

    Batches end on snapshot boundaries because the watermark is a snapshot id: a crash between
    batches leaves every silver table at one, and the next run starts exactly after it."""
    if not appends:
        raise ValueError("no append snapshots to bound")
    if max_records < 1 or max_bytes < 1:
        raise ValueError(f"batch bounds must be positive, got {max_records} records, {max_bytes} bytes")
    records = size = 0
    end = appends[0].snapshot_id
    for index, append in enumerate(appends):
        records, size = records + append.records, size + append.bytes
        if index and (records > max_records or size > max_bytes):
            break
        end = append.snapshot_id
    return end


def bounded_range(upstream: Table, after: int | None, upto: int, max_records: int, max_bytes: int
                  ) -> tuple[int | None, int]:
    """(after, end): the first batch of (after, upto] within the bounds, by the added-records and
    added-files-size of each append snapshot's summary (no file is read)."""
    metadata = upstream.metadata
    start = metadata.snapshot_by_id(after) if after is not None else None
    end = metadata.snapshot_by_id(upto)
    if end is None or (after is not None and start is None):
        return after, upto  # let plan_increment name what is missing
    appends = [
        AppendSize(s.snapshot_id, int(s.summary.additional_properties.get("added-records", 0)),
                   int(s.summary.additional_properties.get("added-files-size", 0)))
        for s in reversed(list(ancestors_between(start, end, metadata)))
        if s.snapshot_id != after and s.summary is not None and s.summary.operation.value == "append"
    ]
    if not appends:
        return after, upto
    last = first_batch_end(appends, max_records, max_bytes)
    return after, upto if last == appends[-1].snapshot_id else last  # all of it: as unbounded


def _appends_between(table: Table, after: int | None, upto: int) -> bool:
    metadata = table.metadata
    start = metadata.snapshot_by_id(after) if after is not None else None
    end = metadata.snapshot_by_id(upto)
    if end is None or (after is not None and start is None):
        return True  # let plan_increment name what is missing
    return any(s.snapshot_id != after and s.summary is not None and s.summary.operation.value == "append"
               for s in ancestors_between(start, end, metadata))


def _sequence(table: Table, snapshot_id: int) -> int:
    snapshot = table.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise LookupError(f"{table.name()} no longer has snapshot {snapshot_id}: it was expired before promotion")
    return snapshot.sequence_number


def plan_increment(table: Table, after: int | None, upto: int) -> Increment:
    """Data files appended after ``after`` up to ``upto`` (compaction and deletes are skipped)."""
    metadata = table.metadata
    start = metadata.snapshot_by_id(after) if after is not None else None
    end = metadata.snapshot_by_id(upto)
    if end is None:
        raise LookupError(f"{table.name()} has no snapshot {upto}")
    if after is not None and start is None:
        raise LookupError(f"{table.name()} no longer has snapshot {after}: it was expired before promotion")
    snapshots = [s for s in ancestors_between(start, end, metadata) if s.snapshot_id != after]
    snapshots.reverse()
    appends = [s for s in snapshots if s.summary is not None and s.summary.operation.value == "append"]
    run_ids = {
        s.summary.additional_properties[RUN_ID_KEY]: s.snapshot_id
        for s in appends
        if RUN_ID_KEY in s.summary.additional_properties
    }
    scan = table.incremental_append_scan(from_snapshot_id_exclusive=after, to_snapshot_id_inclusive=upto)
    tasks = list(scan.plan_files())
    files = tuple(task.file.file_path for task in tasks)
    partitions = tuple(tuple(task.file.partition) for task in tasks)
    return Increment(after, upto, tuple(s.snapshot_id for s in appends), files, partitions, run_ids)


def distinct_added(table: Table, increment: Increment, column: str) -> list:
    """The distinct non-null values of one column in the increment's added files.

    Read with pyiceberg's Arrow reader, not Daft: an increment is usually small, and on Ray the
    first Daft job of a process costs seconds before it reads anything."""
    if not increment.files:
        return []
    scan = table.incremental_append_scan(from_snapshot_id_exclusive=increment.after,
                                         to_snapshot_id_inclusive=increment.upto, selected_fields=(column,))
    seen: set = set()
    for batch in scan.to_arrow_batch_reader():
        seen.update(pc.unique(batch.column(column)).drop_null().to_pylist())
    return sorted(seen)


def read_bronze_increment(increment: Increment, io_config: daft.io.IOConfig) -> DataFrame:
    """Bronze rows of the increment, each tagged with the bronze snapshot that committed it."""
    columns = ["topic", "partition", "offset", "kafka_timestamp", "value", "ingest_run_id"]
    if not increment.files:
        from tasks.transforms.bronze import BRONZE_SCHEMA

        empty = BRONZE_SCHEMA.empty_table().select(columns)
        rows = daft.from_arrow(empty)
    else:
        rows = daft.read_parquet(list(increment.files), io_config=io_config).select(*columns)
    runs = daft.from_arrow(
        pa.table(
            {
                "ingest_run_id": pa.array(list(increment.run_ids), pa.string()),
                "bronze_snapshot_id": pa.array(list(increment.run_ids.values()), pa.int64()),
            }
        )
    )
    # a handful of runs: broadcast them rather than shuffle every bronze row (on Ray)
    return rows.join(runs, on="ingest_run_id", how="left", strategy="broadcast").exclude("ingest_run_id")


def day_bounds(days: list[date]) -> tuple[datetime, datetime] | None:
    if not days:
        return None
    low = datetime.combine(min(days), time(), tzinfo=timezone.utc)
    high = datetime.combine(max(days) + timedelta(days=1), time(), tzinfo=timezone.utc)
    return low, high


def read_days(table: Table, days: list[date], columns: list[str], io_config: daft.io.IOConfig,
              snapshot_id: int | None = None) -> DataFrame | None:
    """Rows of a day-partitioned (by occurred_at) table for the given days, at ``snapshot_id``
    (default: current); None if it has no data."""
    bounds = day_bounds(days)
    if bounds is None or table.current_snapshot() is None:
        return None
    frame = daft.read_iceberg(table, snapshot_id=snapshot_id, io_config=io_config)
    frame = frame.where((col("occurred_at") >= bounds[0]) & (col("occurred_at") < bounds[1]))
    return frame.where(col("event_date").is_in(list(days))).select(*columns)


def read_user_rows(table: Table, user_ids: list[str], columns: list[str], snapshot_id: int | None = None
                   ) -> DataFrame | None:
    """The given users' rows of a small table with a user_id column, read by pyiceberg and handed
    to Daft in memory; None if no users or no data.

    For bounded reads (the touched users' rows of gold.user_daily_activity and silver.dim_users):
    on Ray a Daft scan schedules work per data file, seconds for a few thousand rows."""
    if not user_ids or table.current_snapshot() is None:
        return None
    return daft.from_arrow(table.scan(row_filter=In("user_id", user_ids), selected_fields=tuple(columns),
                                      snapshot_id=snapshot_id).to_arrow())


def read_users(table: Table, user_ids: list[str], columns: list[str], io_config: daft.io.IOConfig) -> DataFrame | None:
    if not user_ids or table.current_snapshot() is None:
        return None
    return daft.read_iceberg(table, io_config=io_config).where(col("user_id").is_in(user_ids)).select(*columns)
