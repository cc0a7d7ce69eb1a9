"""Kafka → bronze, one micro-batch per run, exactly once.

plan (offsets from bronze's last snapshot, watermarks from Kafka) → every partition read and
written as bronze data files in parallel by warm Ray actors (``tasks.bronze_writers``) → one
Iceberg append of those files whose snapshot summary holds the next offsets → only then commit
the consumer group (lag monitoring) → emit ``lakehouse.table.committed``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.bronze_writers import WrittenRange, write_ranges
from tasks.catalog import open_catalog
from tasks.commits import Offsets, append_files_with_offsets, append_with_offsets, latest_offsets
from tasks.compute import plan_while_ray_starts, use_ray
from tasks.kafka import PartitionRange, commit_group_offsets, watermarks
from tasks.offsets import RESET_KEY, OffsetsOutOfRangeError, encode_reset, offset_problems, plan_reset
from tasks.lineage.run import emits_lineage
from tasks.settings import Settings, load_settings
from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table
from tasks.orchestration import (
    TRANSIENT_RETRY,
    crash_if,
    emit_table_committed,
    publish_counts,
    replan_on_conflict,
    table_lock,
)

CRASH_POINTS = ("consuming", "files-written", "committed")


@dataclass(frozen=True)
class BatchLimits:
    max_records: int
    max_bytes: int
    max_seconds: float


@dataclass(frozen=True)
class BatchPlan:
    run_id: str
    topic: str
    expected: Offsets  # what bronze's latest snapshot says now
    ranges: list[PartitionRange]


@dataclass
class BatchReport:
    """What one micro-batch did; returned, logged and kept in the snapshot summary."""

    run_id: str
    topic: str
    records: int = 0
    bytes: int = 0
    partitions: int = 0
    offsets_from: dict[int, int] = field(default_factory=dict)
    offsets_to: dict[int, int] = field(default_factory=dict)
    lag_left: int = 0
    files: int = 0
    read_seconds: dict[int, float] = field(default_factory=dict)  # partition -> Kafka to Arrow
    write_seconds: dict[int, float] = field(default_factory=dict)  # partition -> Arrow to Parquet files
    seconds: float = 0.0
    snapshot_id: Optional[int] = None

    def as_dict(self) -> dict:
        return asdict(self)



@task(**TRANSIENT_RETRY)
def plan_batch(settings: Settings, limits: BatchLimits, run_id: str) -> BatchPlan:
    """Start where bronze's last snapshot says; end at the high watermarks seen now.

    Stored offsets outside a partition's watermarks (records expired by retention, a recreated
    topic) stop the run with :class:`OffsetsOutOfRangeError`: only an audited reset moves them."""
    table = ensure_table(open_catalog(settings, "ingest"), settings, BRONZE_CONVERSION_EVENTS_RAW)
    expected = latest_offsets(table)
    topic = settings.kafka_topic
    marks = watermarks(settings, topic)
    done = expected.get(topic, {})
    problems = offset_problems(topic, done, marks)
    if problems:
        raise OffsetsOutOfRangeError(problems)
    deadline = time.time() + limits.max_seconds
    starts = {}
    for partition, (low, high) in marks.items():
        start = done.get(partition, low)
        if start < high:
            starts[partition] = (start, high)
    # Share the batch budget by lag, so an uneven spread doesn't leave a tiny tail batch.
    total_lag = sum(high - start for start, high in starts.values()) or 1
    ranges = [
        PartitionRange(
            topic, partition, start, high,
            max_records=max(1, limits.max_records * (high - start) // total_lag),
            max_bytes=max(1, limits.max_bytes * (high - start) // total_lag),
            deadline=deadline,
        )
        for partition, (start, high) in starts.items()
    ]
    return BatchPlan(run_id, topic, expected, ranges)


@task(**TRANSIENT_RETRY)
def read_batch(settings: Settings, plan: BatchPlan, ingested_at: datetime) -> list[WrittenRange]:
    """Every partition's range in parallel on the warm writer actors, written as uncommitted bronze files."""
    table = ensure_table(open_catalog(settings, "ingest"), settings, BRONZE_CONVERSION_EVENTS_RAW)
    return write_ranges(
        plan.ranges, settings.kafka_bootstrap, ingested_at, plan.run_id, table.metadata, dict(table.io.properties),
        slots=settings.ingest_writers, idle_seconds=settings.ingest_writer_idle_seconds,
        chunk_bytes=settings.ingest_chunk_bytes,
    )


@task(cache_policy=NO_CACHE)
def commit_batch(settings: Settings, plan: BatchPlan, batches: list[WrittenRange], report: BatchReport,
                 crash_at: str | None) -> int:
    """One Iceberg append of every partition's files, the next offsets in its snapshot summary."""
    table = ensure_table(open_catalog(settings, "ingest"), settings, BRONZE_CONVERSION_EVENTS_RAW)
    next_offsets = {t: dict(ps) for t, ps in plan.expected.items()}
    next_offsets.setdefault(plan.topic, {}).update({b.partition: b.next_offset for b in batches})
    with table_lock(settings, BRONZE_CONVERSION_EVENTS_RAW.identifier):
        return append_files_with_offsets(
            table, [f for b in batches for f in b.data_files], plan.expected, next_offsets, plan.run_id,
            report.as_dict(), on_stage=lambda stage: crash_if(stage, crash_at),
        )


@task(**TRANSIENT_RETRY)
def commit_consumer_group(settings: Settings, report: BatchReport) -> None:
    commit_group_offsets(settings, report.topic, report.offsets_to)


@flow(name="ingest-bronze", log_prints=False)
@emits_lineage("ingest-bronze", "ingest")
def ingest_flow(
    max_records: Optional[int] = None,
    max_bytes: Optional[int] = None,
    max_seconds: Optional[float] = None,
    max_batches: int = 1,
    settings: Optional[Settings] = None,
    crash_at: Optional[str] = None,
) -> dict:
    """Micro-batches from Kafka into bronze.conversion_events_raw, one commit each, until there
    is no lag or ``max_batches`` were committed. Returns the last batch's report, with totals."""
    logger = get_run_logger()
    settings = settings or load_settings()
    if crash_at is not None and crash_at not in CRASH_POINTS:
        raise ValueError(f"crash_at must be one of {CRASH_POINTS}, got {crash_at!r}")
    if max_batches < 1:
        raise ValueError(f"max_batches must be at least 1, got {max_batches}")
    limits = BatchLimits(
        max_records or settings.ingest_max_records,
        max_bytes or settings.ingest_max_bytes,
        max_seconds or settings.ingest_max_seconds,
    )
    total, batches = 0, 0
    while True:
        report = replan_on_conflict(lambda: _ingest_batch(settings, limits, crash_at, logger), "ingest", logger)
        total += report["records"]
        batches += 1 if report["records"] else 0
        if report["lag_left"] == 0 or report["records"] == 0 or batches >= max_batches:
            summary = {**report, "batches": batches, "total_records": total}
            publish_counts("ingest-bronze", {
                "records read and written": total, "batches": batches, "bytes (last batch)": report["bytes"],
                "lag left": report["lag_left"],
                "seconds (last batch)": report["seconds"], "snapshot": report["snapshot_id"],
            }, "Kafka → bronze.conversion_events_raw")
            return summary


def _ingest_batch(settings: Settings, limits: BatchLimits, crash_at: str | None, logger) -> dict:
    began = time.monotonic()
    run_id = str(uuid.uuid4())
    # the readers are our own warm actors, not Daft's
    plan = plan_while_ray_starts(settings, plan_batch, settings, limits, run_id, daft_workers=False)
    report = BatchReport(run_id=run_id, topic=plan.topic)
    if not plan.ranges:
        report.seconds = round(time.monotonic() - began, 3)
        logger.info("nothing to ingest: bronze is at the high watermark of %s", plan.topic)
        return report.as_dict()

    use_ray(settings)
    batches = read_batch(settings, plan, datetime.now(timezone.utc))
    crash_if("consuming", crash_at)
    ends = {r.partition: r.end for r in plan.ranges}
    report.records = sum(b.records for b in batches)
    report.bytes = sum(b.bytes for b in batches)
    report.partitions = sum(1 for b in batches if b.records)
    report.offsets_from = {b.partition: b.start for b in batches}
    report.offsets_to = {b.partition: b.next_offset for b in batches}
    report.lag_left = sum(ends[b.partition] - b.next_offset for b in batches)
    report.files = sum(len(b.data_files) for b in batches)
    report.read_seconds = {b.partition: b.read_seconds for b in batches}
    report.write_seconds = {b.partition: b.write_seconds for b in batches}
    report.seconds = round(time.monotonic() - began, 3)
    report.snapshot_id = commit_batch(settings, plan, batches, report, crash_at)
    commit_consumer_group(settings, report)
    emit_table_committed(settings, BRONZE_CONVERSION_EVENTS_RAW.identifier, "bronze", report.snapshot_id, report.run_id,
                         rows_written=report.records)
    report.seconds = round(time.monotonic() - began, 3)
    logger.info(
        "bronze batch: %d records, %d bytes, %d partitions, offsets %s -> %s, lag left %d, %.2fs, snapshot %s "
        "(%d files; per partition read %s s, write %s s)",
        report.records, report.bytes, report.partitions, report.offsets_from, report.offsets_to,
        report.lag_left, report.seconds, report.snapshot_id, report.files, report.read_seconds, report.write_seconds,
    )
    return report.as_dict()


def reset_offsets(settings: Settings, to: str, partitions: list[int] | None, reason: str,
                  dry_run: bool = False) -> dict:
    """The audited way to move bronze's offsets (``lakehouse ingest reset``): one bronze commit with
    no rows whose summary holds the new offsets and, under ``lakehouse.ingest.reset``, each
    partition's decision. Returns the decisions and the snapshot id (None on a dry run)."""
    table = ensure_table(open_catalog(settings, "ingest"), settings, BRONZE_CONVERSION_EVENTS_RAW)
    expected = latest_offsets(table)
    topic = settings.kafka_topic
    decisions = plan_reset(topic, expected.get(topic, {}), watermarks(settings, topic), to, partitions, reason)
    result = {"topic": topic, "decisions": [d.as_dict() for d in decisions], "snapshot_id": None}
    if dry_run:
        return result
    next_offsets = {t: dict(ps) for t, ps in expected.items()}
    next_offsets.setdefault(topic, {}).update({d.partition: d.to_offset for d in decisions})
    run_id = f"reset-{uuid.uuid4()}"
    empty = table.schema().as_arrow().empty_table()
    with table_lock(settings, BRONZE_CONVERSION_EVENTS_RAW.identifier):
        result["snapshot_id"] = append_with_offsets(table, empty, expected, next_offsets, run_id,
                                                    {"reset": result["decisions"]},
                                                    extra={RESET_KEY: encode_reset(decisions)})
    return result

