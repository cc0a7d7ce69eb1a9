"""Reconciliation of the lakehouse from its tables alone (`lakehouse verify`).

Reads table data and snapshot summaries through the catalog; never writes. Asks Kafka only when
given a :class:`KafkaGapProbe` (``lakehouse verify --kafka``), to confirm bronze's offset gaps.
Every check is a :class:`Check` with a name such as ``silver.records_accounted``; a check that
cannot run (a table or snapshot it needs is gone, a file is unreadable) fails with the reason
rather than stopping the others. A table that does not exist yet, or has no rows, passes with
detail "empty".

Checks, per layer:

bronze (``bronze.conversion_events_raw`` at its current snapshot; only topic, partition and
offset are read, in batches, kept as one sorted int64 array per partition):
  - ``bronze.offsets_contiguous``: per topic and partition the offsets run from the first ingested
    offset (the lowest present, or the lowest batch start an ingest report records) up to the next
    offset in ``lakehouse.kafka.offsets``. A gap is *explained* when it is covered by an audited
    reset (summary key ``lakehouse.ingest.reset``, read from every retained snapshot; ``from`` and
    ``to`` are taken as inclusive, which is right whether ``to`` means the last skipped offset or
    the one ingest resumed at) or by a loss to Kafka retention that the ingest recorded (a batch
    whose ``offsets_from`` is past the previous commit's next offset; when the previous commit was
    expired, up to the batch's ``lost_to_retention`` offsets before its start). Other gaps are
    *unexplained*: transaction markers (one offset per transaction), aborted transactions (a gap
    of N + 1 offsets for N records) and compaction leave them too, and tables alone can't tell
    those from lost records. Without Kafka every unexplained gap passes with a warning (those of
    at most ``max_marker_gap`` offsets look like markers; larger ones are named, "run with
    --kafka to confirm"), and fails with ``allow_unexplained_gaps=False`` or ``strict``.
    With a :class:`KafkaGapProbe` each unexplained gap is read back from the broker
    (read_committed, from the gap's first offset until a record at or past its end, or the
    partition's end): a committed record Kafka delivers *inside* a gap is one bronze lost (fails,
    naming topic, partition and offset); a gap with none is confirmed (passes, strict included);
    a gap whose offsets Kafka no longer has (below the low watermark, past the high one, the
    topic gone), that timed out, or that the probe's bound left out is unconfirmable: a warning.
  - ``bronze.offsets_unique``: no (topic, partition, offset) twice.
  - ``bronze.offsets_within_recorded``: no offset at or past the recorded next offset, and no
    partition with rows but no recorded offset.

silver:
  - ``silver.records_accounted``: each silver table keeps the bronze coordinates of its rows
    (``source_topic``, ``source_partition``, ``source_offset``), so the accounting is a set
    comparison per partition: every bronze record up to the silver watermark
    (``lakehouse.upstream.bronze.conversion_events_raw``; bronze is read *at* that snapshot) must
    be a fact row, a quarantine row, or a duplicate, exactly once. Only the records in neither
    table are candidates for duplicates: just their ``value`` and ``kafka_timestamp`` are read
    (a row filter per partition with their offset range and list), each value is parsed with
    ``json`` for its ``event_id``, and that event_id must be a fact (read by a row filter on the
    ids). Such a duplicate must also have arrived no earlier than the fact kept for its event
    (first arrival wins: Kafka timestamp, topic, partition, offset). Silver rows whose coordinates are
    not in bronze at their table's watermark fail, and so do coordinates counted twice (a fact
    stored twice, or both a fact and a quarantine row). When the facts and quarantine tables are
    at different bronze snapshots (a run stopped between its commits), records up to the older
    one must be accounted exactly once and later ones at most once; that is a warning.
  - ``silver.fact_event_ids_unique``: event_id is unique in ``silver.fact_conversions``.
  - ``silver.batch_counts``: for each silver run whose bronze range is still retained, the runs'
    own reports (``lakehouse.report`` of the facts and quarantine commits for the same bronze
    snapshot) add up: rejected + facts + duplicates_dropped = the bronze ``added-records`` of the
    appends in that range. Runs whose range can't be rebuilt (expired snapshots) are skipped.
  - ``silver.dim_users_scd2``: per user_id the versions, ordered by valid_from, neither overlap
    nor leave gaps (each valid_to is the next valid_from; an empty [t, t) version is allowed),
    valid_to is never before valid_from, exactly one version has no valid_to and it alone is
    current, user_sk is unique; and when dim_users is at the same bronze snapshot as the facts,
    every known user of the facts has versions.
  - ``silver.upstream_snapshots`` (bookkeeping, see below).

gold:
  - ``gold.daily_conversion_metrics``: its count columns (requests, successes, failures,
    unique_users, anonymous_requests, whichever exist) equal a recount, per event_date and
    direction, of ``silver.fact_conversions`` read at the snapshot gold records as its upstream
    (time travel, so silver commits after the gold build don't matter). The recount is plain
    pyarrow ``group_by``, streamed in batches, independent of ``tasks/transforms/gold.py``.
  - ``gold.upstream_snapshots`` (bookkeeping).

bookkeeping (``<layer>.upstream_snapshots``): for every table of the layer, the newest value of
every ``lakehouse.upstream.<table>`` key names a snapshot the upstream table still has (fail),
and one in its current lineage (a warning otherwise: a rollback, or lineage cut by expiry).

Cost: bronze is read as three narrow columns (8 bytes a record are kept per offset); bronze values
are read only for the records silver holds in neither table, from the files that can hold them
(listed offsets in the row filter up to IN_LIST_LIMIT per partition, else the offset range, then
matched exactly). The facts' event_id column is read whole for the uniqueness check.

What it can't see: without Kafka, lost records that look like markers or aborted transactions
(unexplained gaps, warnings); with it, losses in gaps Kafka no longer retains; records Kafka lost
before the first retained ingest report; resets recorded only in expired snapshots (their gaps
turn unexplained); whether silver validated correctly (a record is accounted for whether it went to
facts or quarantine; a fact's columns are not compared with its bronze value); whether dim_users
versions carry the right plan and country; gold tables other than daily_conversion_metrics and gold
columns other than the counts (latency percentiles, averages, success_rate); anything in bronze past
silver's watermark, or in silver past gold's.
"""

from __future__ import annotations

import functools
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, GreaterThanOrEqual, In, LessThanOrEqual, Or
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from tasks.commits import OFFSETS_KEY, REPORT_KEY, decode_offsets, latest_property, upstream_key
from tasks.settings import LAYERS, Settings
from tasks.tables import (
    ALL_TABLES,
    BRONZE_CONVERSION_EVENTS_RAW,
    GOLD_DAILY_CONVERSION_METRICS,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
)

RESET_KEY = "lakehouse.ingest.reset"
UPSTREAM_PREFIX = "lakehouse.upstream."
BRONZE = BRONZE_CONVERSION_EVENTS_RAW.identifier
FACTS = SILVER_FACT_CONVERSIONS.identifier
REJECTED = SILVER_CONVERSION_EVENTS_REJECTED.identifier
DIM_USERS = SILVER_DIM_USERS.identifier
DAILY = GOLD_DAILY_CONVERSION_METRICS.identifier
GOLD_COUNT_COLUMNS = ("requests", "successes", "failures", "unique_users", "anonymous_requests")
EXAMPLES = 5  # offending keys named in a detail

Key = tuple[str, int]  # (topic, partition)
_EMPTY = np.empty(0, dtype=np.int64)


@dataclass
class Check:
    """One reconciliation result. ``warning``: passed, but with something a person should look at."""

    name: str
    layer: str
    ok: bool
    detail: str
    counts: dict = field(default_factory=dict)
    warning: bool = False

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else "WARN" if self.warning else "PASS"

    def as_dict(self) -> dict:
        return {"name": self.name, "layer": self.layer, "status": self.status, "ok": self.ok,
                "warning": self.warning, "detail": self.detail, "counts": self.counts}


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    layers: tuple[str, ...] = LAYERS
    strict: bool = False

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def first_failure(self) -> Check | None:
        return next((check for check in self.checks if not check.ok), None)

    @property
    def warnings(self) -> list[Check]:
        return [check for check in self.checks if check.ok and check.warning]

    def check(self, name: str) -> Check:
        """The check called ``name``; KeyError if it did not run."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "strict": self.strict,
            "layers": list(self.layers),
            "passed": sum(1 for c in self.checks if c.status == "PASS"),
            "warnings": len(self.warnings),
            "failed": sum(1 for c in self.checks if not c.ok),
            "first_failure": self.first_failure.name if self.first_failure else None,
            "checks": [check.as_dict() for check in self.checks],
        }


def render_table(report: VerifyReport) -> str:
    """A plain text table: status, check, detail; then one summary line."""
    rows = [("STATUS", "CHECK", "DETAIL")] + [(c.status, c.name, c.detail) for c in report.checks]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{status:<{widths[0]}}  {name:<{widths[1]}}  {detail}" for status, name, detail in rows]
    summary = report.as_dict()
    lines.append(f"verify {'ok' if report.ok else 'FAILED'}: {len(report.checks)} checks, {summary['passed']} passed, "
                 f"{summary['warnings']} with warnings, {summary['failed']} failed"
                 + (" (strict: warnings fail)" if report.strict else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class Options:
    allow_unexplained_gaps: bool = True
    max_marker_gap: int = 1
    strict: bool = False


def verify(
    catalog: Catalog,
    settings: Settings,
    layers: Sequence[str] = LAYERS,
    *,
    strict: bool = False,
    allow_unexplained_gaps: bool = True,
    max_marker_gap: int = 1,
    kafka: "KafkaGapProbe | str | None" = None,
) -> VerifyReport:
    """Run the checks of ``layers`` (in bronze, silver, gold order) and return their report.

    ``strict``: unexplained bronze gaps fail, and so does every other warning.
    ``allow_unexplained_gaps=False``: only unexplained bronze gaps fail (other warnings stay warnings).
    ``max_marker_gap``: the largest unexplained gap (in offsets) described as a transaction marker.
    ``kafka``: a :class:`KafkaGapProbe` (or a bootstrap string for one with default bounds) that
    confirms unexplained bronze gaps against the broker; None: tables alone.
    ``settings`` is accepted for the CLI's uniform call; the catalog says everything verify reads.
    """
    del settings  # everything comes from the catalog (and, if given, the probe's broker)
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r}; layers are {', '.join(LAYERS)}")
    if max_marker_gap < 0:
        raise ValueError("max_marker_gap must be >= 0")
    probe = KafkaGapProbe(kafka) if isinstance(kafka, str) else kafka
    options = Options(allow_unexplained_gaps and not strict, max_marker_gap, strict)
    context = _Context(catalog, options, probe)
    chosen = tuple(layer for layer in LAYERS if layer in layers)
    report = VerifyReport(layers=chosen, strict=strict)
    for layer in chosen:
        for names, run in _CHECKS[layer]:
            report.checks.extend(_guarded(layer, names, run, context))
    if strict:
        for check in report.checks:
            if check.warning and check.ok:
                check.ok = False
                check.detail = f"strict: {check.detail}"
    return report


def _guarded(layer: str, names: tuple[str, ...], run: Callable[["_Context"], list[Check]],
             context: "_Context") -> list[Check]:
    try:
        return run(context)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run fails, the others still run
        return [Check(name, layer, False, f"could not run: {type(exc).__name__}: {exc}") for name in names]


class _Context:
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
            self._offsets[snapshot_id] = _offsets_by_partition(bronze, snapshot_id, "topic", "partition", "offset")
        return self._offsets[snapshot_id][0]


# ---- reading ------------------------------------------------------------------------------------

def _has_data(table: Table | None) -> bool:
    return table is not None and table.current_snapshot() is not None


def _current_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot is not None else None


def _offsets_by_partition(table: Table, snapshot_id: int | None, topic: str, partition: str,
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


def _summary(snapshot: Snapshot) -> dict[str, str]:
    return dict(snapshot.summary.additional_properties) if snapshot.summary is not None else {}


def _lineage(table: Table) -> list[Snapshot]:
    """The current snapshot's retained ancestry, oldest first."""
    chain = list(ancestors_of(table.current_snapshot(), table.metadata))
    chain.reverse()
    return chain


def _json(raw: str | None) -> object:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _fmt_key(key: Key) -> str:
    return f"{key[0]}[{key[1]}]"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---- bronze -------------------------------------------------------------------------------------

@dataclass
class _Explained:
    """Offset ranges [lo, hi) a gap may be explained by, per partition."""

    resets: dict[Key, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    retention: dict[Key, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    first_start: dict[Key, int] = field(default_factory=dict)
    malformed_resets: list[str] = field(default_factory=list)


def _explanations(table: Table) -> _Explained:
    out = _Explained()
    seen: set[tuple] = set()
    for snapshot in table.metadata.snapshots:  # every retained snapshot: a reset may sit anywhere
        raw = _summary(snapshot).get(RESET_KEY)
        if raw is None:
            continue
        value = _json(raw)
        items = value if isinstance(value, list) else [value]
        for item in items:
            # tasks.offsets.ResetDecision: bronze moved from ``from_offset`` to ``to_offset``, so
            # [from_offset, to_offset) is never ingested. A move back (a replay) or a reset of a
            # partition never ingested leaves no gap.
            try:
                start = item["from_offset"]
                record = (str(item["topic"]), int(item["partition"]), int(start) if start is not None else None,
                          int(item["to_offset"]))
            except (TypeError, KeyError, ValueError):
                out.malformed_resets.append(f"snapshot {snapshot.snapshot_id}: {raw[:80]}")
                continue
            if record[2] is None or record[3] <= record[2]:
                continue
            if record not in seen:  # a reset writer may carry earlier resets forward
                seen.add(record)
                out.resets[(record[0], record[1])].append((record[2], record[3]))
    previous: dict[str, dict[int, int]] | None = None
    for snapshot in _lineage(table):
        props = _summary(snapshot)
        if OFFSETS_KEY not in props:
            continue
        report = _json(props.get(REPORT_KEY))
        if isinstance(report, dict) and isinstance(report.get("offsets_from"), dict) and report.get("topic"):
            topic = str(report["topic"])
            lost = int(report.get("lost_to_retention") or 0)
            for p, start in report["offsets_from"].items():
                key, start = (topic, int(p)), int(start)
                out.first_start[key] = min(out.first_start.get(key, start), start)
                before = previous.get(topic, {}).get(int(p)) if previous is not None else None
                if before is not None and start > before:
                    out.retention[key].append((before, start))
                elif previous is None and lost > 0:  # the commit before it was expired: bounded by the total
                    out.retention[key].append((start - lost, start))
        previous = decode_offsets(props[OFFSETS_KEY])
    return out


def _merge(intervals: Iterable[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    merged: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return (np.array([m[0] for m in merged], dtype=np.int64), np.array([m[1] for m in merged], dtype=np.int64))


def _subtract(a: np.ndarray, b: np.ndarray, intervals: Iterable[tuple[int, int]]
              ) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Gaps [a, b) minus the union of ``intervals``: (gaps touched, offsets covered, remaining a, b).

    Vectorized for the many gaps untouched or wholly covered; the few partly covered are split in Python."""
    starts, ends = _merge(intervals)
    if len(a) == 0 or len(starts) == 0:
        return 0, 0, a, b
    last_before_end = np.searchsorted(starts, b, side="left") - 1  # last interval starting before b
    touched = (last_before_end >= 0) & (ends[np.maximum(last_before_end, 0)] > a)
    holder = np.searchsorted(starts, a, side="right") - 1  # the interval a falls in, if any
    whole = (holder >= 0) & (ends[np.maximum(holder, 0)] >= b)
    keep_a, keep_b = [a[~touched]], [b[~touched]]
    covered = int((b[whole] - a[whole]).sum())
    for lo, hi in zip(a[touched & ~whole].tolist(), b[touched & ~whole].tolist()):
        cursor = lo
        for s, e in zip(starts.tolist(), ends.tolist()):
            if e <= cursor or s >= hi:
                continue
            if s > cursor:
                keep_a.append(np.array([cursor]))
                keep_b.append(np.array([s]))
            covered += min(e, hi) - max(s, cursor)
            cursor = max(cursor, e)
        if cursor < hi:
            keep_a.append(np.array([cursor]))
            keep_b.append(np.array([hi]))
    rest_a = np.concatenate(keep_a).astype(np.int64)
    rest_b = np.concatenate(keep_b).astype(np.int64)
    order = np.argsort(rest_a, kind="stable")
    return int(touched.sum()), covered, rest_a[order], rest_b[order]


def _gaps(unique: np.ndarray, start: int | None, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Missing ranges [a, b) of ``unique`` (sorted, all < end) within [start, end)."""
    if len(unique) == 0:
        if start is not None and start < end:
            return np.array([start], dtype=np.int64), np.array([end], dtype=np.int64)
        return _EMPTY, _EMPTY
    inner = np.nonzero(np.diff(unique) > 1)[0]
    a, b = unique[inner] + 1, unique[inner + 1]
    if start is not None and start < unique[0]:
        a, b = np.concatenate([[start], a]), np.concatenate([[unique[0]], b])
    if unique[-1] + 1 < end:
        a, b = np.concatenate([a, [unique[-1] + 1]]), np.concatenate([b, [end]])
    return a.astype(np.int64), b.astype(np.int64)


# ---- the Kafka cross-check of bronze's gaps -----------------------------------------------------

_PENDING, _CONFIRMED, _LOST, _GONE = 0, 1, 2, 3
LOST_EXAMPLES = 100  # lost records kept by coordinates in a probe's result (all are counted)


@dataclass
class GapProbeResult:
    """What Kafka said about bronze's unexplained gaps. ``unconfirmable``: reason -> (gaps, offsets)."""

    gaps: int = 0
    confirmed_gaps: int = 0
    confirmed_offsets: int = 0
    lost_gaps: int = 0
    lost_records: int = 0
    lost: list[tuple[str, int, int]] = field(default_factory=list)  # (topic, partition, offset), the first ones
    unconfirmable: dict[str, list[int]] = field(default_factory=dict)
    unprobed_gaps: int = 0
    unprobed_offsets: int = 0
    bound: str | None = None  # what cut the probe short

    @property
    def unconfirmable_gaps(self) -> int:
        return sum(gaps for gaps, _ in self.unconfirmable.values())

    def _gone(self, reason: str, gaps: int, offsets: int) -> None:
        if gaps:
            entry = self.unconfirmable.setdefault(reason, [0, 0])
            entry[0] += gaps
            entry[1] += offsets

    def as_counts(self) -> dict:
        return {"gaps": self.gaps, "confirmed_gaps": self.confirmed_gaps, "confirmed_offsets": self.confirmed_offsets,
                "lost_gaps": self.lost_gaps, "lost_records": self.lost_records,
                "lost": [f"{t}[{p}]@{o}" for t, p, o in self.lost[:EXAMPLES]],
                "unconfirmable_gaps": self.unconfirmable_gaps,
                "unconfirmable": {k: {"gaps": g, "offsets": o} for k, (g, o) in self.unconfirmable.items()},
                "unprobed_gaps": self.unprobed_gaps, "unprobed_offsets": self.unprobed_offsets, "bound": self.bound}


@dataclass(frozen=True)
class KafkaGapProbe:
    """Reads bronze's unexplained offset gaps back from Kafka to tell the broker's own gaps
    (transaction markers, aborted transactions, compaction) from records bronze lost.

    One consumer (``read_committed``, assigned, never committing) for the whole run. Per partition,
    the gaps are read in offset order: the consumer is assigned at a gap's first offset (the low
    watermark if retention took the start) and consumes until the position passes the gap's end
    (a delivered record at or past it, or ``consumer.position`` after a fetch that skipped the
    gap's markers and aborted records); a following gap within ``read_through`` offsets is read on
    by the same fetches instead of a new assignment. Every delivered record is checked against
    every gap of its partition. Bounds: at most ``max_gaps`` gaps are probed (the largest first),
    ``max_seconds`` in all, and a gap without progress for ``stall_seconds`` is given up.
    ``consumer_factory`` (tests) returns an object with the ``confluent_kafka.Consumer`` methods
    list_topics, get_watermark_offsets, assign, consume, position and close.
    """

    bootstrap: str
    max_gaps: int = 10_000
    max_seconds: float = 300.0
    stall_seconds: float = 10.0
    read_through: int = 1_000
    poll_seconds: float = 0.05
    consumer_factory: Callable[[], Any] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **bounds) -> "KafkaGapProbe":
        return cls(settings.kafka_bootstrap, **bounds)

    def _consumer(self):
        if self.consumer_factory is not None:
            return self.consumer_factory()
        from confluent_kafka import Consumer

        from tasks.kafka import consumer_config

        return Consumer({**consumer_config(self.bootstrap, "lakehouse-verify"), "isolation.level": "read_committed",
                         # a new assignment per gap: fetch little past it, prefetch little
                         "fetch.max.bytes": 1 << 20, "max.partition.fetch.bytes": 1 << 20,
                         "queued.max.messages.kbytes": 4096})

    def probe(self, gaps: dict[Key, tuple[np.ndarray, np.ndarray]]) -> GapProbeResult:
        """Classify the gaps [a, b) of each (topic, partition) (sorted, disjoint)."""
        result = GapProbeResult(gaps=sum(len(a) for a, _ in gaps.values()))
        if result.gaps == 0:
            return result
        wanted = self._select(gaps)
        if result.gaps > self.max_gaps:
            result.bound = f"max_gaps={self.max_gaps}"
        started = time.monotonic()
        deadline = started + self.max_seconds
        consumer = None
        try:
            consumer = self._consumer()
            for topic in sorted({t for t, _ in gaps}):
                keys = sorted(k for k in gaps if k[0] == topic)
                partitions = self._partitions(consumer, topic)
                for key in keys:
                    a, b = gaps[key]
                    if partitions is None or key[1] not in partitions:
                        why = "topic no longer exists" if partitions is None else "partition no longer exists"
                        result._gone(why, len(a), int((b - a).sum()))
                        continue
                    if time.monotonic() >= deadline:
                        result.bound = result.bound or f"max_seconds={self.max_seconds:g}"
                        self._unprobed(result, a, b, np.ones(len(a), dtype=bool))
                        continue
                    self._probe_partition(consumer, key, a, b, wanted[key], deadline, result)
        except Exception as exc:  # noqa: BLE001 - an unreachable broker leaves gaps unconfirmed, not verify broken
            done = result.confirmed_gaps + result.lost_gaps + result.unconfirmable_gaps + result.unprobed_gaps
            result._gone(f"Kafka error: {type(exc).__name__}: {exc}", result.gaps - done, 0)
        finally:
            if consumer is not None:
                consumer.close()
        return result

    def _select(self, gaps: dict[Key, tuple[np.ndarray, np.ndarray]]) -> dict[Key, np.ndarray]:
        """Which gaps to probe: all, or the ``max_gaps`` largest (then the earliest)."""
        total = sum(len(a) for a, _ in gaps.values())
        if total <= self.max_gaps:
            return {key: np.ones(len(a), dtype=bool) for key, (a, _) in gaps.items()}
        keys = sorted(gaps)
        sizes = np.concatenate([gaps[k][1] - gaps[k][0] for k in keys])
        owner = np.concatenate([np.full(len(gaps[k][0]), i) for i, k in enumerate(keys)])
        chosen = np.zeros(total, dtype=bool)
        chosen[np.argsort(-sizes, kind="stable")[: self.max_gaps]] = True
        return {k: chosen[owner == i] for i, k in enumerate(keys)}

    @staticmethod
    def _partitions(consumer, topic: str) -> set[int] | None:
        metadata = consumer.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None
        return set(found.partitions)

    @staticmethod
    def _unprobed(result: GapProbeResult, a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> None:
        result.unprobed_gaps += int(mask.sum())
        result.unprobed_offsets += int((b[mask] - a[mask]).sum())

    def _probe_partition(self, consumer, key: Key, a: np.ndarray, b: np.ndarray, wanted: np.ndarray,
                         deadline: float, result: GapProbeResult) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        topic, partition = key
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        lo, hi = np.maximum(a, low), np.minimum(b, high)  # the part of each gap Kafka still has
        status = np.where(lo < hi, _PENDING, _GONE).astype(np.int8)
        lost = np.zeros(len(a), dtype=bool)
        timed_out = np.zeros(len(a), dtype=bool)
        read_from = cursor = None  # this assignment's start; the offset every record before it was read
        for i in np.nonzero(wanted & (status == _PENDING))[0].tolist():
            if status[i] != _PENDING:
                continue  # read through while probing an earlier gap
            if time.monotonic() >= deadline:
                result.bound = result.bound or f"max_seconds={self.max_seconds:g}"
                break
            start, end = int(lo[i]), int(hi[i])
            if cursor is None or start - cursor > self.read_through:
                # Only ever forward: librdkafka may report the previous assignment's position until
                # the new one fetches, and that is at most ``cursor``, below ``start``.
                consumer.assign([TopicPartition(topic, partition, start)])
                read_from = cursor = start
            progress_at = time.monotonic()
            out_of_time = False
            while cursor < end:
                now = time.monotonic()
                out_of_time = now >= deadline
                if out_of_time or now - progress_at >= self.stall_seconds:
                    break
                before = cursor
                messages = consumer.consume(num_messages=1_000, timeout=self.poll_seconds)
                for message in messages:
                    if message.error() is not None:
                        raise KafkaException(message.error())
                    offset = message.offset()
                    if (message.topic(), message.partition()) != key or offset < cursor:
                        continue  # delivered before (or for an earlier assignment)
                    j = int(np.searchsorted(a, offset, side="right")) - 1
                    if j >= 0 and offset < b[j]:
                        lost[j] = True
                        result.lost_records += 1
                        if len(result.lost) < LOST_EXAMPLES:
                            result.lost.append((topic, partition, offset))
                    cursor = offset + 1
                # after a fetch the position is past the markers and aborted records it skipped
                position = consumer.position([TopicPartition(topic, partition)])[0].offset
                if position is not None and position > cursor:
                    cursor = position
                if cursor > before:
                    progress_at = time.monotonic()
            # every pending gap the continuous read from ``read_from`` passed is settled
            done = (status == _PENDING) & (lo >= read_from) & (hi <= cursor)
            status[done] = _CONFIRMED
            if status[i] == _PENDING:
                if out_of_time:
                    result.bound = result.bound or f"max_seconds={self.max_seconds:g}"
                    break  # this gap and the rest: not probed
                timed_out[i] = True
                status[i] = _GONE
                cursor = None  # start afresh for the next gap
        status[lost] = _LOST
        whole = (lo == a) & (hi == b)
        confirmed = (status == _CONFIRMED) & whole
        result.confirmed_gaps += int(confirmed.sum())
        result.confirmed_offsets += int((b[confirmed] - a[confirmed]).sum())
        result.lost_gaps += int(lost.sum())
        rest = ~lost & ~confirmed & (status != _PENDING)
        below = rest & (lo > a) & ~timed_out
        beyond = rest & (hi < b) & ~below & ~timed_out
        reasons = (
            (below, f"offsets below the low watermark {low} (deleted by retention)"),
            (beyond, f"offsets at or past the high watermark {high} (topic recreated or truncated?)"),
            (rest & timed_out & ~below & ~beyond, f"no answer within {self.stall_seconds:g}s"),
        )
        for mask, why in reasons:
            result._gone(why, int(mask.sum()), int((b[mask] - a[mask]).sum()))
        unprobed = status == _PENDING
        if unprobed.any():
            self._unprobed(result, a, b, unprobed)


def _describe_probe(probe: GapProbeResult, parts: list[str]) -> tuple[bool, bool]:
    """Append the probe's findings to ``parts``; returns (failed, warning)."""
    if probe.confirmed_gaps:
        parts.append(f"{_plural(probe.confirmed_gaps, 'gap')} ({probe.confirmed_offsets} offsets) confirmed by "
                     "Kafka: no committed record inside (transaction markers, aborted transactions or compaction)")
    warning = False
    for why, (gaps, offsets) in sorted(probe.unconfirmable.items()):
        warning = True
        parts.append(f"{_plural(gaps, 'gap')} ({offsets} offsets) unconfirmable: {why}")
    if probe.unprobed_gaps:
        warning = True
        parts.append(f"{_plural(probe.unprobed_gaps, 'gap')} ({probe.unprobed_offsets} offsets) not probed: "
                     f"the probe's bound {probe.bound} cut it short")
    failed = probe.lost_records > 0
    if failed:
        shown = ", ".join(f"{t}[{p}]@{o}" for t, p, o in probe.lost[:EXAMPLES])
        parts.append(f"records missing from bronze: Kafka delivered {probe.lost_records} committed "
                     f"record(s) inside bronze's gaps ({_plural(probe.lost_gaps, 'gap')}): {shown}"
                     + (", ..." if probe.lost_records > EXAMPLES else ""))
    return failed, warning


_BRONZE_CHECKS = ("bronze.offsets_contiguous", "bronze.offsets_unique", "bronze.offsets_within_recorded")


def _bronze_checks(context: _Context) -> list[Check]:
    table = context.table(BRONZE)
    if not _has_data(table):
        return [Check(name, "bronze", True, "empty") for name in _BRONZE_CHECKS]
    raw_offsets = latest_property(table, OFFSETS_KEY)
    recorded = decode_offsets(raw_offsets) if raw_offsets is not None else {}
    present = context.bronze_offsets(_current_id(table))
    if not present and not recorded:
        return [Check(name, "bronze", True, "empty") for name in _BRONZE_CHECKS]
    explained = _explanations(table)
    options = context.options
    next_of = {(t, p): o for t, ps in recorded.items() for p, o in ps.items()}
    totals = dict.fromkeys(("records", "duplicate_rows", "rows_past_next_offset", "unrecorded_partition_rows", "gaps",
                            "reset_gaps", "reset_offsets", "retention_gaps", "retention_offsets", "unexplained_gaps",
                            "unexplained_offsets", "unexplained_gaps_over_marker_size"), 0)
    largest = 0
    worst: list[str] = []  # unexplained gaps larger than max_marker_gap
    some: list[str] = []  # the first unexplained gaps
    repeated: list[str] = []
    beyond: list[str] = []
    unrecorded: list[str] = []
    per_partition = {}
    unexplained_gaps: dict[Key, tuple[np.ndarray, np.ndarray]] = {}
    for key in sorted(set(present) | set(next_of)):
        offsets = present.get(key, _EMPTY)
        totals["records"] += len(offsets)
        unique = np.unique(offsets)
        repeats = len(offsets) - len(unique)
        if repeats:
            totals["duplicate_rows"] += repeats
            values, counts = np.unique(offsets, return_counts=True)
            repeated += [f"{_fmt_key(key)}@{v} x{c}" for v, c in zip(values[counts > 1][:EXAMPLES].tolist(),
                                                                      counts[counts > 1][:EXAMPLES].tolist())]
        end = next_of.get(key)
        if end is None:
            totals["unrecorded_partition_rows"] += len(offsets)
            unrecorded.append(_fmt_key(key))
            continue
        over = unique[unique >= end]
        if len(over):
            totals["rows_past_next_offset"] += int(np.count_nonzero(offsets >= end))
            beyond.append(f"{_fmt_key(key)}: {len(over)} offsets >= next offset {end} (first {int(over[0])})")
        unique = unique[unique < end]
        start = explained.first_start.get(key)
        if len(unique):
            start = min(int(unique[0]), start) if start is not None else int(unique[0])
        a, b = _gaps(unique, start, end)
        totals["gaps"] += len(a)
        n, covered, a, b = _subtract(a, b, explained.resets.get(key, ()))
        totals["reset_gaps"] += n
        totals["reset_offsets"] += covered
        n, covered, a, b = _subtract(a, b, explained.retention.get(key, ()))
        totals["retention_gaps"] += n
        totals["retention_offsets"] += covered
        sizes = b - a
        if len(sizes):
            unexplained_gaps[key] = (a, b)
        totals["unexplained_gaps"] += len(sizes)
        totals["unexplained_offsets"] += int(sizes.sum())
        big = sizes > options.max_marker_gap
        totals["unexplained_gaps_over_marker_size"] += int(big.sum())
        if len(sizes):
            largest = max(largest, int(sizes.max()))
        worst += [f"{_fmt_key(key)} [{lo}, {hi})" for lo, hi in zip(a[big][:EXAMPLES].tolist(), b[big][:EXAMPLES].tolist())]
        if len(some) < EXAMPLES:
            some += [f"{_fmt_key(key)} [{lo}, {hi})" for lo, hi in zip(a[:EXAMPLES].tolist(), b[:EXAMPLES].tolist())]
        per_partition[_fmt_key(key)] = {"first": start, "next": end, "records": len(offsets)}
    counts = {"partitions": len(per_partition), **totals, "largest_unexplained_gap": largest,
              "max_marker_gap": options.max_marker_gap, "by_partition": per_partition}

    # offsets_contiguous
    parts = [f"{_plural(len(per_partition), 'partition')}, {totals['records']} records"]
    if totals["reset_gaps"]:
        parts.append(f"{_plural(totals['reset_gaps'], 'gap')} ({totals['reset_offsets']} offsets) covered by audited resets")
    if totals["retention_gaps"]:
        parts.append(f"{_plural(totals['retention_gaps'], 'gap')} ({totals['retention_offsets']} offsets) "
                     f"lost to Kafka retention as the ingest recorded")
    unexplained = totals["unexplained_gaps"]
    ok, warning = True, False
    if unexplained:
        parts.append(f"{_plural(unexplained, 'unexplained gap')} ({totals['unexplained_offsets']} offsets, "
                     f"largest {largest})")
    if context.kafka is not None:
        # Kafka says which gaps are its own: confirmed ones pass, lost records fail, the rest warn
        probe = context.kafka.probe(unexplained_gaps)
        counts["kafka"] = probe.as_counts()
        failed, warning = _describe_probe(probe, parts)
        if failed:
            ok = False
        elif warning and not options.allow_unexplained_gaps:
            ok = False
            parts.append("unconfirmed gaps not allowed (strict)")
    elif unexplained:
        warning = True
        over = totals["unexplained_gaps_over_marker_size"]
        if over:
            parts.append(f"{over} larger than max_marker_gap={options.max_marker_gap}, e.g. "
                         f"{', '.join(worst[:EXAMPLES])}: records missing from bronze, or an aborted transaction "
                         "(it leaves a gap of its records + 1); run with --kafka to confirm")
        else:
            parts.append(f"each at most {options.max_marker_gap} offset(s): consistent with transaction markers, "
                         "but tables alone can't prove it (run with --kafka to confirm)")
        if not options.allow_unexplained_gaps:
            ok = False
            parts.append(f"not allowed (strict): e.g. {', '.join((worst or some)[:EXAMPLES])}")
    if explained.malformed_resets:
        warning = True
        parts.append(f"unreadable {RESET_KEY} records: {'; '.join(explained.malformed_resets[:EXAMPLES])}")
    if not recorded:
        ok = False
        parts.append(f"no snapshot records {OFFSETS_KEY}")
    contiguous = Check("bronze.offsets_contiguous", "bronze", ok, "; ".join(parts), counts, warning)

    dup_rows = totals["duplicate_rows"]
    unique_check = Check(
        "bronze.offsets_unique", "bronze", dup_rows == 0,
        f"{totals['records']} records, no (topic, partition, offset) twice" if not dup_rows
        else f"{dup_rows} extra rows for repeated offsets, e.g. {', '.join(repeated[:EXAMPLES])}",
        {"records": totals["records"], "duplicate_rows": dup_rows},
    )
    problems = beyond + ([f"rows in partitions without a recorded next offset: {', '.join(unrecorded)}"]
                         if unrecorded else [])
    within = Check(
        "bronze.offsets_within_recorded", "bronze", not problems,
        "every offset is below its partition's recorded next offset" if not problems else "; ".join(problems[:EXAMPLES]),
        {"next_offsets": {_fmt_key(k): v for k, v in sorted(next_of.items())},
         "rows_past_next_offset": totals["rows_past_next_offset"],
         "unrecorded_partition_rows": totals["unrecorded_partition_rows"]},
    )
    return [contiguous, unique_check, within]


# ---- silver -------------------------------------------------------------------------------------

def _sequence(table: Table, snapshot_id: int) -> int:
    snapshot = table.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise LookupError(f"{table.name()} has no snapshot {snapshot_id}")
    return snapshot.sequence_number or 0


def _watermark(table: Table | None, upstream: str) -> int | None:
    if not _has_data(table):
        return None
    raw = latest_property(table, upstream_key(upstream))
    return int(raw) if raw is not None else None


IN_LIST_LIMIT = 10_000  # offsets per partition listed in a row filter; above it, the offset range only


def _coordinate_filter(wanted: dict[Key, np.ndarray]) -> BooleanExpression:
    """The wanted bronze records' partitions and offset ranges (for file pruning by column stats),
    with the offsets themselves when they are few; callers still match the offsets exactly."""
    parts = []
    for (topic, partition), offsets in sorted(wanted.items()):
        low, high = int(offsets.min()), int(offsets.max())
        part = And(EqualTo("topic", topic), EqualTo("partition", partition),
                   GreaterThanOrEqual("offset", low), LessThanOrEqual("offset", high))
        if len(offsets) <= IN_LIST_LIMIT:
            part = And(part, In("offset", [int(v) for v in offsets.tolist()]))
        parts.append(part)
    return functools.reduce(Or, parts) if len(parts) > 1 else parts[0]


def _bronze_rows(bronze: Table, snapshot_id: int, wanted: dict[Key, np.ndarray]) -> Iterable[dict]:
    """The wanted bronze records (topic, partition, offset, kafka_timestamp, value), streamed."""
    scan = bronze.scan(snapshot_id=snapshot_id, row_filter=_coordinate_filter(wanted),
                       selected_fields=("topic", "partition", "offset", "kafka_timestamp", "value"))
    for batch in scan.to_arrow_batch_reader():
        if batch.num_rows == 0:
            continue
        rows = pa.Table.from_batches([batch])
        topics = rows.column("topic").to_numpy(zero_copy_only=False)
        partitions = rows.column("partition").to_numpy(zero_copy_only=False)
        offsets = rows.column("offset").to_numpy(zero_copy_only=False)
        keep = np.zeros(rows.num_rows, dtype=bool)
        for key in set(zip(topics.tolist(), partitions.tolist())):
            mine = (topics == key[0]) & (partitions == key[1])
            keep |= mine & np.isin(offsets, wanted.get(key, _EMPTY))
        if keep.any():
            yield from rows.filter(pa.array(keep)).to_pylist()


def _event_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    event_id = doc.get("event_id") if isinstance(doc, dict) else None
    return event_id if isinstance(event_id, str) else None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _arrival(ts: datetime | None, topic: str | None, partition: int | None, offset: int | None) -> tuple:
    """The arrival order silver keeps the first of: (Kafka timestamp in µs, topic, partition, offset)."""
    micros = (ts - _EPOCH) // timedelta(microseconds=1) if ts is not None else np.iinfo(np.int64).max
    return (micros, topic or "", partition if partition is not None else -1, offset if offset is not None else -1)


def _records_accounted(context: _Context) -> list[Check]:
    name, layer = "silver.records_accounted", "silver"
    bronze, facts, rejected = context.table(BRONZE), context.table(FACTS), context.table(REJECTED)
    marks = {FACTS: _watermark(facts, BRONZE), REJECTED: _watermark(rejected, BRONZE)}
    silver_tables = {FACTS: facts, REJECTED: rejected}
    coords: dict[str, dict[Key, np.ndarray]] = {}
    incomplete = 0
    for table_name, table in silver_tables.items():
        found, missing_coords = (_offsets_by_partition(table, _current_id(table), "source_topic", "source_partition",
                                                       "source_offset") if _has_data(table) else ({}, 0))
        coords[table_name], incomplete = found, incomplete + missing_coords
    silver_rows = sum(len(v) for c in coords.values() for v in c.values()) + incomplete
    if all(mark is None for mark in marks.values()):
        if silver_rows:
            return [Check(name, layer, False, f"silver holds {silver_rows} rows but records no "
                                              f"{upstream_key(BRONZE)} watermark")]
        return [Check(name, layer, True, "empty")]
    if bronze is None:
        return [Check(name, layer, False, f"silver records bronze watermarks {marks} but {BRONZE} does not exist")]
    for table_name, mark in marks.items():
        if mark is not None and bronze.metadata.snapshot_by_id(mark) is None:
            return [Check(name, layer, False, f"{table_name} is promoted up to bronze snapshot {mark}, "
                                              "which bronze no longer has: nothing to reconcile against")]
    known = [m for m in marks.values() if m is not None]
    low = None if None in marks.values() else min(known, key=lambda m: _sequence(bronze, m))
    interrupted = len(set(marks.values())) > 1
    base = context.bronze_offsets(low) if low is not None else {}
    at_mark = {t: context.bronze_offsets(m) if m is not None else {} for t, m in marks.items()}

    totals = dict.fromkeys(("bronze_records", "facts", "rejected", "duplicates", "missing", "counted_more_than_once",
                            "not_in_bronze", "earlier_arrival_dropped", "after_older_watermark"), 0)
    examples: dict[str, list[str]] = defaultdict(list)
    candidates: dict[Key, np.ndarray] = {}
    keys = set(base) | set(coords[FACTS]) | set(coords[REJECTED])
    for key in sorted(keys):
        f, r = coords[FACTS].get(key, _EMPTY), coords[REJECTED].get(key, _EMPTY)
        both = np.concatenate([f, r])
        values, counts = np.unique(both, return_counts=True)
        twice = values[counts > 1]
        if len(twice):
            totals["counted_more_than_once"] += int((counts[counts > 1] - 1).sum())
            examples["counted_more_than_once"] += [f"{_fmt_key(key)}@{o}" for o in twice[:EXAMPLES].tolist()]
        for table_name, mine in ((FACTS, f), (REJECTED, r)):
            upstream = np.unique(at_mark[table_name].get(key, _EMPTY))
            phantom = np.setdiff1d(mine, upstream)
            if len(phantom):
                totals["not_in_bronze"] += len(phantom)
                examples["not_in_bronze"] += [f"{table_name} {_fmt_key(key)}@{o}" for o in phantom[:EXAMPLES].tolist()]
        records = np.unique(base.get(key, _EMPTY))
        in_facts, in_rejected = np.isin(records, f), np.isin(records, r)
        totals["bronze_records"] += len(records)
        totals["facts"] += int(in_facts.sum())
        totals["rejected"] += int(in_rejected.sum())
        rest = records[~(in_facts | in_rejected)]
        if len(rest):
            candidates[key] = rest
        later = values[~np.isin(values, records)]  # silver rows of records after the older watermark
        totals["after_older_watermark"] += len(later)

    # Records in neither table: duplicates of a fact's event, or missing. Read just those values.
    ids: dict[tuple[str, int, int], tuple[str | None, tuple]] = {}
    if candidates:
        for row in _bronze_rows(bronze, low, candidates):
            ids[(row["topic"], row["partition"], row["offset"])] = (
                _event_id(row["value"]), _arrival(row["kafka_timestamp"], row["topic"], row["partition"], row["offset"]))
    wanted_ids = sorted({event_id for event_id, _ in ids.values() if event_id is not None})
    kept: dict[str, tuple] = {}
    if wanted_ids and _has_data(facts):
        few = len(wanted_ids) <= IN_LIST_LIMIT  # else stream the narrow columns and match in Arrow
        scan = facts.scan(row_filter=In("event_id", wanted_ids) if few else AlwaysTrue(),
                          selected_fields=("event_id", "kafka_timestamp", "source_topic", "source_partition", "source_offset"))
        value_set = pa.array(wanted_ids, pa.string())
        for batch in scan.to_arrow_batch_reader():
            if not few:
                batch = batch.filter(pc.is_in(batch.column("event_id"), value_set=value_set))
            for row in batch.to_pylist():
                arrival = _arrival(row["kafka_timestamp"], row["source_topic"], row["source_partition"], row["source_offset"])
                kept[row["event_id"]] = min(kept.get(row["event_id"], arrival), arrival)
    for key, offsets in sorted(candidates.items()):
        for offset in offsets.tolist():
            event_id, arrival = ids.get((key[0], key[1], offset), (None, None))
            if event_id is not None and event_id in kept:
                totals["duplicates"] += 1
                if arrival < kept[event_id]:
                    totals["earlier_arrival_dropped"] += 1
                    examples["earlier_arrival_dropped"].append(f"{_fmt_key(key)}@{offset} (event {event_id})")
            else:
                totals["missing"] += 1
                why = "no event_id in its value" if event_id is None else f"event {event_id} is not a fact"
                examples["missing"].append(f"{_fmt_key(key)}@{offset} ({why})")

    counts = {"bronze_snapshot": low, "watermarks": marks, **totals, "rows_without_coordinates": incomplete}
    problems = []
    if totals["missing"]:
        problems.append(f"{totals['missing']} bronze records in neither facts nor quarantine and no duplicate "
                        f"of a fact: {', '.join(examples['missing'][:EXAMPLES])}")
    if totals["counted_more_than_once"]:
        problems.append(f"{totals['counted_more_than_once']} bronze records counted more than once: "
                        f"{', '.join(examples['counted_more_than_once'][:EXAMPLES])}")
    if totals["not_in_bronze"]:
        problems.append(f"{totals['not_in_bronze']} silver rows whose bronze record is not in bronze at the "
                        f"table's watermark: {', '.join(examples['not_in_bronze'][:EXAMPLES])}")
    if totals["earlier_arrival_dropped"]:
        problems.append(f"{totals['earlier_arrival_dropped']} duplicates arrived before the fact kept for their "
                        f"event (first arrival must win): {', '.join(examples['earlier_arrival_dropped'][:EXAMPLES])}")
    if incomplete:
        problems.append(f"{incomplete} silver rows without bronze coordinates")
    balance = (f"bronze {totals['bronze_records']} = facts {totals['facts']} + rejected {totals['rejected']} "
               f"+ duplicates {totals['duplicates']}")
    if problems:
        return [Check(name, layer, False, "; ".join(problems), counts)]
    detail = f"{balance} (up to bronze snapshot {low})"
    if interrupted:
        detail += (f"; facts and quarantine are at different bronze snapshots {marks} (a run stopped between its "
                   f"commits; the next silver run finishes it): {totals['after_older_watermark']} rows past the older")
    return [Check(name, layer, True, detail, counts, warning=interrupted)]


def _event_ids_unique(context: _Context) -> list[Check]:
    name, layer = "silver.fact_event_ids_unique", "silver"
    facts = context.table(FACTS)
    if not _has_data(facts):
        return [Check(name, layer, True, "empty")]
    ids = facts.scan(selected_fields=("event_id",)).to_arrow().column("event_id")
    if len(ids) == 0:
        return [Check(name, layer, True, "empty")]
    distinct = pc.count_distinct(ids, mode="all").as_py()
    counts = {"facts": len(ids), "distinct_event_ids": distinct}
    if distinct == len(ids):
        return [Check(name, layer, True, f"{len(ids)} facts, each event_id once", counts)]
    tally = pc.value_counts(ids)
    repeated = [f"{v['values']} x{v['counts']}" for v in tally.to_pylist() if v["counts"] > 1]
    counts["repeated_event_ids"] = len(repeated)
    return [Check(name, layer, False, f"{len(ids) - distinct} extra facts for {len(repeated)} event_ids held more "
                                      f"than once, e.g. {', '.join(repeated[:EXAMPLES])}", counts)]


def _runs(table: Table, upstream: str) -> list[tuple[int | None, int, dict]]:
    """(after, upto, report) of every run in the table's retained lineage, oldest first; ``after`` is
    -1 when the run before it was expired (unknown), None when it was the table's first."""
    key = upstream_key(upstream)
    chain = _lineage(table)
    complete = bool(chain) and chain[0].parent_snapshot_id is None
    runs: list[tuple[int | None, int, dict]] = []
    previous: int | None = None if complete else -1
    for snapshot in chain:
        props = _summary(snapshot)
        if key not in props:
            continue
        upto = int(props[key])
        report = _json(props.get(REPORT_KEY))
        report = report if isinstance(report, dict) else {}
        if runs and runs[-1][1] == upto:  # a delete and an append of one commit_rows: one run
            runs[-1] = (runs[-1][0], upto, report or runs[-1][2])
            continue
        runs.append((previous, upto, report))
        previous = upto
    return runs


def _bronze_added(bronze: Table, after: int | None, upto: int) -> int | None:
    """Rows the bronze appends in (after, upto] added; None if that range is no longer retained."""
    snapshot = bronze.metadata.snapshot_by_id(upto)
    added = 0
    while snapshot is not None and snapshot.snapshot_id != after:
        props = _summary(snapshot)
        if snapshot.summary is not None and snapshot.summary.operation.value == "append":
            added += int(props.get("added-records", 0))
        if snapshot.parent_snapshot_id is None:
            return added if after is None else None
        snapshot = bronze.metadata.snapshot_by_id(snapshot.parent_snapshot_id)
    return added if snapshot is not None else None


def _batch_counts(context: _Context) -> list[Check]:
    name, layer = "silver.batch_counts", "silver"
    bronze, facts, rejected = context.table(BRONZE), context.table(FACTS), context.table(REJECTED)
    if not (_has_data(facts) and _has_data(rejected) and _has_data(bronze)):
        return [Check(name, layer, True, "empty")]
    quarantine = {(after, upto): report for after, upto, report in _runs(rejected, BRONZE)}
    checked, skipped, wrong = 0, 0, []
    for after, upto, report in _runs(facts, BRONZE):
        other = quarantine.get((after, upto))
        needed = ("facts", "duplicates_dropped")
        if after == -1 or other is None or "rejected" not in other or any(k not in report for k in needed):
            skipped += 1
            continue
        added = _bronze_added(bronze, after, upto)
        if added is None:
            skipped += 1
            continue
        checked += 1
        total = int(other["rejected"]) + int(report["facts"]) + int(report["duplicates_dropped"])
        if total != added:
            wrong.append(f"bronze ({after}, {upto}]: {added} records but rejected {other['rejected']} + facts "
                         f"{report['facts']} + duplicates {report['duplicates_dropped']} = {total}")
    counts = {"runs_checked": checked, "runs_skipped": skipped, "runs_wrong": len(wrong)}
    if wrong:
        return [Check(name, layer, False, "; ".join(wrong[:EXAMPLES]), counts)]
    detail = (f"{_plural(checked, 'silver run')}: rejected + facts + duplicates_dropped = bronze records"
              if checked else "no silver run with a report and a retained bronze range to check")
    if skipped:
        detail += f"; {_plural(skipped, 'run')} skipped (no report, or their bronze range is no longer retained)"
    return [Check(name, layer, True, detail, counts)]


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    """Timestamps as int64 microseconds; null becomes int64 max (open-ended)."""
    as_int = pc.cast(column.cast(pa.timestamp("us", tz="UTC")), pa.int64())
    return pc.fill_null(as_int, np.iinfo(np.int64).max).to_numpy().astype(np.int64, copy=False)


def _dim_users(context: _Context) -> list[Check]:
    name, layer = "silver.dim_users_scd2", "silver"
    dim = context.table(DIM_USERS)
    if not _has_data(dim):
        return [Check(name, layer, True, "empty")]
    rows = dim.scan(selected_fields=("user_sk", "user_id", "valid_from", "valid_to", "is_current")).to_arrow()
    if rows.num_rows == 0:
        return [Check(name, layer, True, "empty")]
    problems: list[str] = []
    counts: dict[str, int] = {"versions": rows.num_rows}
    nulls = rows.num_rows - rows.select(["user_id", "valid_from"]).drop_null().num_rows
    if nulls:
        problems.append(f"{nulls} versions without user_id or valid_from")
        rows = rows.filter(pc.and_(pc.is_valid(rows.column("user_id")), pc.is_valid(rows.column("valid_from"))))
    sks = rows.column("user_sk")
    if pc.count_distinct(sks, mode="all").as_py() != rows.num_rows:
        problems.append("user_sk is not unique")
    open_ended = pc.is_null(rows.column("valid_to"))
    rows = rows.append_column("open", open_ended).sort_by(
        [("user_id", "ascending"), ("valid_from", "ascending"), ("open", "ascending"), ("valid_to", "ascending")])
    users = rows.column("user_id").to_numpy(zero_copy_only=False)
    starts, ends = _micros(rows.column("valid_from")), _micros(rows.column("valid_to"))
    is_open = rows.column("open").to_numpy(zero_copy_only=False).astype(bool)
    current = pc.fill_null(rows.column("is_current"), False).to_numpy(zero_copy_only=False).astype(bool)
    counts["users"] = int(len(np.unique(users)))

    def report(mask: np.ndarray, key: str, what: str) -> None:
        if mask.any():
            counts[key] = int(mask.sum())
            problems.append(f"{int(mask.sum())} {what}, users {', '.join(sorted(set(users[mask].tolist()))[:EXAMPLES])}")

    report(~is_open & (ends < starts), "ending_before_start", "versions ending before they start")
    report(current != is_open, "is_current_wrong", "versions whose is_current disagrees with valid_to")
    same_user = users[1:] == users[:-1]
    nxt = np.nonzero(same_user)[0]  # index i: row i and i + 1 are versions of one user
    overlap, gap = np.zeros(len(users), bool), np.zeros(len(users), bool)
    overlap[nxt] = starts[nxt + 1] < ends[nxt]  # an open version followed by another overlaps it too
    gap[nxt] = ~is_open[nxt] & (starts[nxt + 1] > ends[nxt])
    report(overlap, "overlapping_versions", "overlapping versions")
    report(gap, "gaps_between_versions", "gaps between versions")
    unique_users, first_index = np.unique(users, return_index=True)
    firsts = np.sort(first_index)  # rows are sorted by user: each user's rows start here
    open_per_user = np.add.reduceat(is_open.astype(np.int64), firsts) if len(users) else np.empty(0, np.int64)
    ordered_users = users[firsts]
    bad_current = open_per_user != 1
    if bad_current.any():
        counts["users_without_exactly_one_current"] = int(bad_current.sum())
        problems.append(f"{int(bad_current.sum())} users without exactly one current version: "
                        f"{', '.join(ordered_users[bad_current][:EXAMPLES].tolist())}")
    # coverage: every known user of the facts has versions, when dim_users is as far as the facts
    facts = context.table(FACTS)
    note = ""
    if _has_data(facts):
        if _watermark(dim, BRONZE) == _watermark(facts, BRONZE):
            seen: set = set()
            for batch in facts.scan(selected_fields=("user_id",)).to_arrow_batch_reader():
                seen.update(pc.unique(batch.column("user_id")).drop_null().to_pylist())
            without = sorted(seen - set(unique_users.tolist()))
            counts["fact_users"] = len(seen)
            if without:
                counts["fact_users_without_versions"] = len(without)
                problems.append(f"{len(without)} users of the facts have no versions: {', '.join(without[:EXAMPLES])}")
        else:
            note = "; not at the facts' bronze snapshot, so user coverage is not checked"
    if problems:
        return [Check(name, layer, False, "; ".join(problems), counts)]
    return [Check(name, layer, True, f"{counts['users']} users, {counts['versions']} versions: contiguous, "
                                     f"one current each{note}", counts, warning=bool(note))]


# ---- gold ---------------------------------------------------------------------------------------

def _recount(facts: Table, snapshot_id: int) -> dict[tuple, dict[str, int]]:
    """Per (event_date, direction): requests, successes, failures, unique_users, anonymous_requests,
    from the facts at ``snapshot_id``: each batch reduced to (day, direction, user) partials."""
    columns = ("event_date", "direction", "user_id", "success")
    keys = ["event_date", "direction", "user_id"]
    partials: list[pa.Table] = []
    for batch in facts.scan(snapshot_id=snapshot_id, selected_fields=columns).to_arrow_batch_reader():
        if batch.num_rows == 0:
            continue
        rows = pa.Table.from_batches([batch])
        rows = rows.append_column("n", pa.array(np.ones(rows.num_rows, dtype=np.int64)))
        rows = rows.append_column("s", pc.fill_null(pc.cast(rows.column("success"), pa.int64()), 0))
        partials.append(rows.group_by(keys).aggregate([("n", "sum"), ("s", "sum")])
                        .rename_columns(keys + ["n", "s"]))
        if len(partials) > 64:  # keep the partials bounded by distinct (day, direction, user)
            partials = [pa.concat_tables(partials).group_by(keys).aggregate([("n", "sum"), ("s", "sum")])
                        .rename_columns(keys + ["n", "s"])]
    if not partials:
        return {}
    users = pa.concat_tables(partials).group_by(keys).aggregate([("n", "sum"), ("s", "sum")]) \
        .rename_columns(keys + ["n", "s"])
    anonymous = pc.if_else(pc.is_null(users.column("user_id")), users.column("n"), pa.scalar(0, pa.int64()))
    users = users.append_column("anon", anonymous)
    daily = users.group_by(["event_date", "direction"]).aggregate(
        [("n", "sum"), ("s", "sum"), ("user_id", "count"), ("anon", "sum")])
    out = {}
    for row in daily.to_pylist():
        requests, successes = int(row["n_sum"]), int(row["s_sum"])
        out[(row["event_date"], row["direction"])] = {
            "requests": requests, "successes": successes, "failures": requests - successes,
            "unique_users": int(row["user_id_count"]), "anonymous_requests": int(row["anon_sum"]),
        }
    return out


def _gold_daily(context: _Context) -> list[Check]:
    name, layer = "gold.daily_conversion_metrics", "gold"
    gold, facts = context.table(DAILY), context.table(FACTS)
    if not _has_data(gold):
        return [Check(name, layer, True, "empty")]
    mark = _watermark(gold, FACTS)
    present = [c for c in GOLD_COUNT_COLUMNS if c in gold.schema().column_names]
    rows = gold.scan(selected_fields=("event_date", "direction", *present)).to_arrow().to_pylist()
    if mark is None:
        if rows:
            return [Check(name, layer, False, f"{len(rows)} rows but no {upstream_key(FACTS)} watermark")]
        return [Check(name, layer, True, "empty")]
    if facts is None or facts.metadata.snapshot_by_id(mark) is None:
        return [Check(name, layer, False, f"gold was built from {FACTS} snapshot {mark}, which silver no longer "
                                          "has: cannot recount")]
    expected = _recount(facts, mark)
    stored: dict[tuple, dict] = {}
    problems: list[str] = []
    for row in rows:
        key = (row["event_date"], row["direction"])
        if key in stored:
            problems.append(f"{key[0]} {key[1]}: more than one row")
        stored[key] = row
    for key in sorted(set(stored) | set(expected), key=lambda k: (str(k[0]), str(k[1]))):
        have, want = stored.get(key), expected.get(key)
        if have is None:
            problems.append(f"{key[0]} {key[1]}: no gold row for {want['requests']} silver facts")
        elif want is None:
            problems.append(f"{key[0]} {key[1]}: gold row with {have.get('requests')} requests but no silver facts")
        else:
            problems += [f"{key[0]} {key[1]} {c}: gold {have[c]} != silver {want[c]}" for c in present
                         if have[c] != want[c]]
    counts = {"silver_snapshot": mark, "groups": len(expected), "gold_rows": len(rows), "columns": present,
              "requests": sum(v["requests"] for v in expected.values()), "mismatches": len(problems)}
    if problems:
        return [Check(name, layer, False, f"{len(problems)} mismatches against silver snapshot {mark}: "
                                          + "; ".join(problems[:EXAMPLES]), counts)]
    return [Check(name, layer, True, f"{len(rows)} rows ({', '.join(present)}) match a recount of "
                                     f"{counts['requests']} facts at silver snapshot {mark}", counts)]


# ---- bookkeeping --------------------------------------------------------------------------------

def _upstream_snapshots(layer: str) -> Callable[[_Context], list[Check]]:
    def run(context: _Context) -> list[Check]:
        name = f"{layer}.upstream_snapshots"
        problems, notes, pointers = [], [], {}
        for spec in (s for s in ALL_TABLES if s.layer == layer):
            table = context.table(spec.identifier)
            if not _has_data(table):
                continue
            keys = sorted({k for s in _lineage(table) for k in _summary(s) if k.startswith(UPSTREAM_PREFIX)})
            for key in keys:
                upstream_name, raw = key[len(UPSTREAM_PREFIX):], latest_property(table, key)
                try:
                    snapshot_id = int(raw)
                except (TypeError, ValueError):
                    problems.append(f"{spec.identifier}: {key}={raw!r} is not a snapshot id")
                    continue
                pointers.setdefault(spec.identifier, {})[upstream_name] = snapshot_id
                upstream = context.table(upstream_name)
                if upstream is None:
                    problems.append(f"{spec.identifier}: {key} names {upstream_name}, which does not exist")
                elif upstream.metadata.snapshot_by_id(snapshot_id) is None:
                    problems.append(f"{spec.identifier}: {key}={snapshot_id} is not a snapshot of {upstream_name}")
                elif snapshot_id not in {s.snapshot_id for s in ancestors_of(upstream.current_snapshot(),
                                                                             upstream.metadata)}:
                    notes.append(f"{spec.identifier}: {upstream_name} snapshot {snapshot_id} is not in its current "
                                 "lineage (rolled back, or lineage cut by expiry)")
        counts = {"pointers": pointers}
        if problems:
            return [Check(name, layer, False, "; ".join(problems), counts)]
        if not pointers:
            return [Check(name, layer, True, "empty", counts)]
        total = sum(len(v) for v in pointers.values())
        detail = f"upstream snapshot ids: {total} in {_plural(len(pointers), 'table')}, all exist upstream"
        if notes:
            detail += "; " + "; ".join(notes[:EXAMPLES])
        return [Check(name, layer, True, detail, counts, warning=bool(notes))]

    return run


_CHECKS: dict[str, list[tuple[tuple[str, ...], Callable[[_Context], list[Check]]]]] = {
    "bronze": [(_BRONZE_CHECKS, _bronze_checks)],
    "silver": [
        (("silver.records_accounted",), _records_accounted),
        (("silver.fact_event_ids_unique",), _event_ids_unique),
        (("silver.batch_counts",), _batch_counts),
        (("silver.dim_users_scd2",), _dim_users),
        (("silver.upstream_snapshots",), _upstream_snapshots("silver")),
    ],
    "gold": [
        (("gold.daily_conversion_metrics",), _gold_daily),
        (("gold.upstream_snapshots",), _upstream_snapshots("gold")),
    ],
}
