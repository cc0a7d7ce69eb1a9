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

Modules: ``report`` (Check, VerifyReport, render_table, Options) and ``reading`` (the tables, the
per-run Context, row and summary helpers) at the bottom; the checks in ``bronze``, ``kafka_gaps``
(the probe bronze's gaps are confirmed with), ``silver``, ``gold`` and ``bookkeeping``; this module
runs them (:func:`verify`) and re-exports the public names.
"""

from __future__ import annotations

from typing import Callable, Sequence

from pyiceberg.catalog import Catalog

from tasks.settings import LAYERS, Settings
from tasks.verify.bookkeeping import UPSTREAM_PREFIX, upstream_snapshots
from tasks.verify.bronze import BRONZE_CHECKS, RESET_KEY, bronze_checks
from tasks.verify.gold import GOLD_COUNT_COLUMNS, gold_daily
from tasks.verify.kafka_gaps import LOST_EXAMPLES, GapProbeResult, KafkaGapProbe
from tasks.verify.reading import BRONZE, DAILY, DIM_USERS, FACTS, REJECTED, Context, Key
from tasks.verify.report import EXAMPLES, Check, Options, VerifyReport, render_table
from tasks.verify.silver import IN_LIST_LIMIT, batch_counts, dim_users, event_ids_unique, records_accounted

__all__ = [
    "BRONZE", "DAILY", "DIM_USERS", "EXAMPLES", "FACTS", "GOLD_COUNT_COLUMNS", "IN_LIST_LIMIT", "LOST_EXAMPLES",
    "REJECTED", "RESET_KEY", "UPSTREAM_PREFIX", "Check", "GapProbeResult", "KafkaGapProbe", "Key", "Options",
    "VerifyReport", "render_table", "verify",
]


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
    context = Context(catalog, options, probe)
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


def _guarded(layer: str, names: tuple[str, ...], run: Callable[["Context"], list[Check]],
             context: "Context") -> list[Check]:
    try:
        return run(context)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run fails, the others still run
        return [Check(name, layer, False, f"could not run: {type(exc).__name__}: {exc}") for name in names]


_CHECKS: dict[str, list[tuple[tuple[str, ...], Callable[[Context], list[Check]]]]] = {
    "bronze": [(BRONZE_CHECKS, bronze_checks)],
    "silver": [
        (("silver.records_accounted",), records_accounted),
        (("silver.fact_event_ids_unique",), event_ids_unique),
        (("silver.batch_counts",), batch_counts),
        (("silver.dim_users_scd2",), dim_users),
        (("silver.upstream_snapshots",), upstream_snapshots("silver")),
    ],
    "gold": [
        (("gold.daily_conversion_metrics",), gold_daily),
        (("gold.upstream_snapshots",), upstream_snapshots("gold")),
    ],
}
