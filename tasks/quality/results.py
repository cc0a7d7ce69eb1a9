"""Outcomes as rows: the audit.dq_results records of a check, the quarantine rows of the facts a
quarantine expectation rejected, and the volume baseline. Pure: Arrow and Python in and out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from tasks.quality.runner import Outcome

RESULT_COLUMNS = (
    "run_id", "flow", "table_name", "snapshot_id", "suite", "expectation", "expectation_type", "severity", "success",
    "observed_value", "element_count", "unexpected_count", "unexpected_percent", "evaluated_at",
)
_RESULT_TYPES = (
    pa.string(), pa.string(), pa.string(), pa.int64(), pa.string(), pa.string(), pa.string(), pa.string(), pa.bool_(),
    pa.string(), pa.int64(), pa.int64(), pa.float64(), pa.timestamp("us", "UTC"),
)
RESULT_SCHEMA = pa.schema(list(zip(RESULT_COLUMNS, _RESULT_TYPES)))
QUARANTINE_SOURCE = ("source_topic", "source_partition", "source_offset", "kafka_timestamp", "bronze_snapshot_id")


def result_rows(outcomes: Sequence[Outcome], *, run_id: str, flow: str, table: str, snapshot_id: int | None,
                suite: str, evaluated_at: datetime) -> pa.Table:
    """One audit.dq_results row per outcome."""
    rows = [{
        "run_id": run_id, "flow": flow, "table_name": table, "snapshot_id": snapshot_id, "suite": suite,
        "expectation": o.expectation, "expectation_type": o.expectation_type, "severity": o.severity,
        "success": o.success, "observed_value": o.observed_value, "element_count": o.element_count,
        "unexpected_count": o.unexpected_count, "unexpected_percent": o.unexpected_percent,
        "evaluated_at": evaluated_at,
    } for o in outcomes]
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def split_quarantine(facts: pa.Table, quarantine: Mapping[int, Sequence[str]], reasons: Mapping[str, str],
                     rejected_schema: pa.Schema) -> tuple[pa.Table, pa.Table]:
    """``facts`` without the rows ``quarantine`` names (row position -> expectations broken), and
    those rows as quarantine rows of ``rejected_schema``: reason codes ``reasons[name]``, a detail
    naming the expectations, no raw value (bronze keeps it; the source columns point at it)."""
    if not quarantine:
        return facts, rejected_schema.empty_table()
    positions = sorted(quarantine)
    mask = [True] * facts.num_rows
    for i in positions:
        mask[i] = False
    kept = facts.filter(pa.array(mask))
    taken = facts.take(pa.array(positions, pa.int64()))
    columns = {
        "reason_codes": [[reasons[name] for name in quarantine[i]] for i in positions],
        "reject_detail": [f"data quality: {', '.join(quarantine[i])} (event_id {facts.column('event_id')[i].as_py()})"
                          for i in positions],
        "value": [None] * len(positions),
        **{name: taken.column(name) for name in QUARANTINE_SOURCE},
    }
    arrays = [pa.array(columns[f.name], f.type) if not isinstance(columns[f.name], pa.ChunkedArray)
              else columns[f.name].cast(f.type) for f in rejected_schema]
    return kept, pa.Table.from_arrays(arrays, schema=rejected_schema)


def without_ids(ids: Iterable[str], quarantined: Iterable[str]) -> list[str]:
    """``ids`` minus the ``quarantined`` event_ids: a quarantined earlier arrival must not delete
    the stored copy it would have replaced."""
    gone = set(quarantined)
    return [i for i in ids if i not in gone]


def with_quarantined(rows: pa.Table, quarantined: pa.Table | None) -> pa.Table:
    """The contract's quarantine rows and the data-quality ones, in ``rows``' schema."""
    if quarantined is None or quarantined.num_rows == 0:
        return rows
    return pa.concat_tables([rows, quarantined.select(rows.column_names).cast(rows.schema)])


def same_hour_windows(batch_hour: datetime, days: int) -> list[tuple[datetime, datetime]]:
    """The same clock hour on each of the ``days`` days before ``batch_hour`` (an hour start)."""
    return [(batch_hour - timedelta(days=d), batch_hour - timedelta(days=d) + timedelta(hours=1)) for d in range(1, days + 1)]


def same_hour_baseline(history: pa.Array | pa.ChunkedArray, windows: Sequence[tuple[datetime, datetime]]) -> float | None:
    """The average row count per window, over the windows that hold any rows (silver's first days
    have none); None when no window does."""
    counts = []
    for start, end in windows:
        inside = pc.and_(pc.greater_equal(history, pa.scalar(start, pa.timestamp("us", "UTC"))),
                         pc.less(history, pa.scalar(end, pa.timestamp("us", "UTC"))))
        n = pc.sum(pc.cast(inside, pa.int64())).as_py() or 0
        if n:
            counts.append(n)
    return sum(counts) / len(counts) if counts else None


def latest_status(audit: pa.Table, runs: int = 3) -> list[dict]:
    """Per (table, suite), its last ``runs`` checked batches, newest first: when, the run, how many
    expectations were met, and those that were not (with severity and observed value)."""
    batches: dict[tuple, dict] = {}
    for row in audit.to_pylist():
        key = (row["table_name"], row["suite"], row["run_id"])
        entry = batches.setdefault(key, {"table": row["table_name"], "suite": row["suite"], "run_id": row["run_id"],
                                         "evaluated_at": row["evaluated_at"], "snapshot_id": row["snapshot_id"],
                                         "expectations": 0, "met": 0, "failing": []})
        entry["evaluated_at"] = max(entry["evaluated_at"], row["evaluated_at"])
        entry["expectations"] += 1
        if row["success"]:
            entry["met"] += 1
        else:
            entry["failing"].append(f"{row['expectation']} ({row['severity']}): {row['observed_value']}")
    out: list[dict] = []
    for table, suite in sorted({(t, s) for t, s, _ in batches}):
        mine = sorted((b for (t, s, _), b in batches.items() if (t, s) == (table, suite)),
                      key=lambda b: b["evaluated_at"], reverse=True)
        out.extend({**b, "failing": sorted(b["failing"])} for b in mine[:runs])
    return out
