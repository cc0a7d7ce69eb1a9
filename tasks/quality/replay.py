"""Replay of quarantined rows: re-check them with today's contract, settings and suite, and promote
those now valid to silver exactly once. The pure selection and shaping here; the reads and commits
are the thin tasks of flows/replay.py."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In, Or

from tasks.quality.runner import Outcome

KEY = ("source_topic", "source_partition", "source_offset")  # one bronze record
RECORD_COLUMNS = ("topic", "partition", "offset", "kafka_timestamp", "value", "bronze_snapshot_id")


def selected(rejected: pa.Table, reason: str | None, since: datetime | None) -> pa.Table:
    """The quarantined rows to re-check: with ``reason`` among their codes, Kafka time at or
    after ``since``; one row per bronze record."""
    keep = pa.array([True] * rejected.num_rows)
    if reason is not None:
        codes = rejected.column("reason_codes").to_pylist()
        keep = pc.and_(keep, pa.array([reason in (c or []) for c in codes]))
    if since is not None:
        keep = pc.and_(keep, pc.fill_null(pc.greater_equal(rejected.column("kafka_timestamp"), pa.scalar(since)), False))
    rows = rejected.filter(keep)
    seen, first = set(), []
    for i, key in enumerate(zip(*(rows.column(k).to_pylist() for k in KEY))):
        if key not in seen:
            seen.add(key)
            first.append(i)
    return rows.take(pa.array(first, pa.int64()))


def as_records(quarantined: pa.Table, bronze: pa.Table) -> pa.Table:
    """Bronze-shaped records (the input of ``silver.validate``) of the quarantined rows: the raw
    value the quarantine kept, else bronze's (data-quality rows keep none)."""
    stored = {key: value for key, value in zip(zip(*(bronze.column(k).to_pylist() for k in ("topic", "partition", "offset"))),
                                               bronze.column("value").to_pylist())}
    keys = list(zip(*(quarantined.column(k).to_pylist() for k in KEY)))
    values = [v if v is not None else stored.get(k) for k, v in zip(keys, quarantined.column("value").to_pylist())]
    return pa.table({
        "topic": pa.array([k[0] for k in keys], pa.string()),
        "partition": pa.array([k[1] for k in keys], pa.int32()),
        "offset": pa.array([k[2] for k in keys], pa.int64()),
        "kafka_timestamp": quarantined.column("kafka_timestamp").cast(pa.timestamp("us", "UTC")),
        "value": pa.array(values, pa.binary()),
        "bronze_snapshot_id": quarantined.column("bronze_snapshot_id").cast(pa.int64()),
    })


def sort_out(first: pa.Table, stored: dict[str, tuple]) -> list[str]:
    """Per row of ``first`` (one now-valid row per event): ``new`` (silver lacks the event: promote
    it), ``recovered`` (silver holds this very record: an earlier replay committed it and stopped
    before clearing the quarantine) or ``duplicate`` (silver holds another arrival: it stays)."""
    out = []
    for row in first.select(["event_id", *KEY]).to_pylist():
        there = stored.get(row["event_id"])
        out.append("new" if there is None else "recovered" if there == tuple(row[k] for k in KEY) else "duplicate")
    return out


def still_failing(outcomes: Sequence[Outcome]) -> set[int]:
    """View rows a row-level ``quarantine`` or ``fail`` expectation still rejects."""
    return {row for o in outcomes if not o.success and o.severity in ("quarantine", "fail") for row in o.failing_rows}


def records_filter(keys: Iterable[tuple[str, int, int]], names: tuple[str, str, str] = KEY) -> BooleanExpression:
    """The rows of those (topic, partition, offset) records, per (topic, partition) one In on the offsets."""
    groups: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in keys:
        groups.setdefault((topic, partition), []).append(offset)
    parts = [And(EqualTo(names[0], t), And(EqualTo(names[1], p), In(names[2], sorted(o)))) for (t, p), o in groups.items()]
    if not parts:
        raise ValueError("no records")
    return parts[0] if len(parts) == 1 else Or(*parts)
