"""Bronze → silver: validate, quarantine, deduplicate across history, SCD2 users.

Each run promotes the bronze append snapshots after silver's watermark, in bounded batches of
whole snapshots (``silver_max_batch_records``, ``silver_max_batch_bytes``), each a promotion of its
own. The three silver tables are committed in a fixed order (rejected, facts, users), each
recording the bronze snapshot it is promoted up to, so a crash between commits or between batches
is finished by the next run and never repeated.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks import silver_jobs
from tasks.catalog import open_catalog
from tasks.commits import REPORT_KEY, RUN_ID_KEY, commit_rows, conform, replace_filter, upstream_key, upstream_snapshot
from tasks.compute import plan_while_ray_starts, use_ray
from tasks.daft_host import Kept, daft_jobs
from tasks.quality.results import with_quarantined
from tasks.quality.steps import check_new_facts, prewarm as prewarm_quality
from tasks.scans import Increment, bounded_range, pending_range, plan_increment
from tasks.lineage.run import emits_lineage
from tasks.settings import Settings, load_settings
from tasks.tables import (
    BRONZE_CONVERSION_EVENTS_RAW,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
    V2_FACT_COLUMNS,
    TableSpec,
    ensure_table,
)
from tasks.orchestration import (
    TRANSIENT_RETRY,
    crash_if,
    emit_table_committed,
    publish_counts,
    replan_on_conflict,
    table_lock,
)

CRASH_POINTS = ("read", "rejected-committed", "facts-committed", "batch-committed")
SILVER_TABLES = (SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS, SILVER_DIM_USERS)
UPSTREAM = BRONZE_CONVERSION_EVENTS_RAW.identifier


@dataclass(frozen=True)
class SilverPlan:
    run_id: str
    increment: Increment | None  # None: nothing new in bronze
    watermarks: dict[str, int | None]  # silver table -> bronze snapshot it is promoted up to
    head: int | None = None  # bronze's newest snapshot when the run began: its batches go no further


@dataclass
class SilverReport:
    run_id: str
    bronze_from: Optional[int] = None
    bronze_to: Optional[int] = None
    bronze_records: int = 0
    facts: int = 0
    rejected: int = 0
    duplicates_dropped: int = 0
    replaced_by_earlier_arrival: int = 0
    users_touched: int = 0
    users_rebuilt: int = 0  # touched users whose SCD2 versions were rebuilt from their facts
    reasons: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)  # table -> snapshot id
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)



@task(**TRANSIENT_RETRY)
def plan_silver(settings: Settings, run_id: str, head: int | None = None) -> SilverPlan:
    """Which bronze snapshots to promote: after the oldest silver watermark, up to the newest work
    within the batch bounds. A range a crash interrupted (the watermarks disagree) is finished as
    it was planned, whatever the bounds are now."""
    catalog = open_catalog(settings, "silver")
    bronze = ensure_table(catalog, settings, BRONZE_CONVERSION_EVENTS_RAW)
    watermarks = {
        spec.identifier: upstream_snapshot(ensure_table(catalog, settings, spec), UPSTREAM) for spec in SILVER_TABLES
    }
    if head is None:
        current = bronze.current_snapshot()
        head = current.snapshot_id if current is not None else None
    elif _newer_than(bronze, set(watermarks.values()), head):
        return SilverPlan(run_id, None, watermarks, head)  # a concurrent run went past this run's head
    pending = pending_range(bronze, list(watermarks.values()), head)
    if pending is None:
        return SilverPlan(run_id, None, watermarks, head)
    if len(set(watermarks.values())) == 1:
        pending = bounded_range(bronze, *pending, settings.silver_max_batch_records, settings.silver_max_batch_bytes)
    return SilverPlan(run_id, plan_increment(bronze, *pending), watermarks, head)


def _newer_than(bronze, marks: set, head: int) -> bool:
    """Whether every silver table is already at or past bronze's snapshot ``head``."""
    if len(marks) != 1 or None in marks:
        return False
    mark, end = bronze.metadata.snapshot_by_id(next(iter(marks))), bronze.metadata.snapshot_by_id(head)
    return mark is not None and end is not None and mark.sequence_number >= end.sequence_number


@task(**TRANSIENT_RETRY)
def check_bronze(settings: Settings, plan: SilverPlan, jobs) -> Kept:
    """Validate the increment once and keep it where the Daft jobs run: facts and quarantine
    both come from it."""
    return jobs.keep(plan.run_id, silver_jobs.check_increment, settings, plan.increment)


def _commit(settings, spec: TableSpec, plan: SilverPlan, rows, facts: dict, delete_filter=None) -> int | None:
    """Commit one silver table unless an earlier run already promoted it this far."""
    upto = plan.increment.upto
    expected = plan.watermarks[spec.identifier]
    if expected == upto:
        return None
    table = ensure_table(open_catalog(settings, "silver"), settings, spec)
    summary = {
        upstream_key(UPSTREAM): str(upto),
        RUN_ID_KEY: plan.run_id,
        REPORT_KEY: json.dumps(facts, sort_keys=True, default=str),
    }
    return commit_rows(  # the promotion holds the lock of every silver table (``_promote``)
        table,
        conform(rows, table),
        summary,
        still_current=lambda t: upstream_snapshot(t, UPSTREAM) == expected,
        delete_filter=delete_filter,
    )


@dataclass(frozen=True)
class Outcome:
    """What one silver table commit did."""

    rows: int
    snapshot_id: int | None
    detail: dict = field(default_factory=dict)


@task(cache_policy=NO_CACHE)
def commit_rejected(settings: Settings, plan: SilverPlan, jobs, checked: Kept, dq_rows=None) -> Outcome:
    """The contract's quarantine rows and ``dq_rows``, those a data-quality expectation quarantined."""
    rows = with_quarantined(jobs.call(silver_jobs.rejected_rows, checked), dq_rows)
    reasons: dict[str, int] = {}
    for codes in rows.column("reason_codes").to_pylist():
        for code in codes:
            reasons[code] = reasons.get(code, 0) + 1
    snapshot = _commit(settings, SILVER_CONVERSION_EVENTS_REJECTED, plan, rows, {"rejected": rows.num_rows, "reasons": reasons})
    return Outcome(rows.num_rows, snapshot, {"reasons": reasons})


@task(cache_policy=NO_CACHE)
def commit_facts(settings: Settings, plan: SilverPlan, jobs, checked: Kept, found=None) -> Outcome:
    """Append the batch's first arrivals (``silver_jobs.new_facts``, or ``found`` as data quality
    left them); an earlier arrival of a stored event replaces it in the same commit."""
    import pyarrow.compute as pc

    found = found if found is not None else jobs.call(silver_jobs.new_facts, settings, checked)
    rows, replaced_ids = found.rows, found.replaced_ids
    if rows.num_rows and pc.any(pc.equal(rows.column("schema_version"), 2)).as_py():
        _add_v2_columns(ensure_table(open_catalog(settings, "silver"), settings, SILVER_FACT_CONVERSIONS))
    detail = {"facts": rows.num_rows - len(replaced_ids), "duplicates_dropped": found.dropped,
              "replaced_by_earlier_arrival": len(replaced_ids)}
    snapshot = _commit(settings, SILVER_FACT_CONVERSIONS, plan, rows, detail,
                       delete_filter=replace_filter(rows, "event_id", replaced_ids, "occurred_at") if replaced_ids else None)
    return Outcome(rows.num_rows - len(replaced_ids), snapshot, {**detail, "users": found.users})


def _add_v2_columns(table) -> None:
    """Schema evolution for schema_version 2: new optional columns, no data rewritten."""
    names = {f.name for f in table.schema().fields}
    missing = [(n, t) for n, t in V2_FACT_COLUMNS if n not in names]
    if not missing:
        return
    try:
        with table.update_schema() as update:
            for name, kind in missing:
                update.add_column(name, kind, doc="schema_version 2")
    except ValueError:
        table.refresh()  # a concurrent run added them first


@task(cache_policy=NO_CACHE)
def commit_users(settings: Settings, plan: SilverPlan, jobs, checked: Kept, users: list[str]) -> Outcome:
    """Replace the SCD2 versions of the touched users the batch may change (``silver_jobs.rebuilt_user_versions``)."""
    from pyiceberg.expressions import In

    rows, rebuild = jobs.call(silver_jobs.rebuilt_user_versions, settings, checked, users)
    get_run_logger().info("dim_users: %d of %d touched users rebuilt", len(rebuild), len(users))
    snapshot = _commit(settings, SILVER_DIM_USERS, plan, rows,
                       {"users": len(users), "rebuilt": len(rebuild), "versions": rows.num_rows},
                       delete_filter=In("user_id", rebuild) if rebuild else None)
    return Outcome(rows.num_rows, snapshot, {"rebuilt": len(rebuild)})


@flow(name="promote-silver", log_prints=False)
@emits_lineage("promote-silver", "silver")
def silver_flow(
    bronze_snapshot_id: Optional[int] = None,
    settings: Optional[Settings] = None,
    crash_at: Optional[str] = None,
) -> dict:
    """Promote every bronze snapshot not yet in silver, one bounded batch after another until
    caught up; a rerun with nothing new commits nothing.

    ``bronze_snapshot_id`` is the commit that triggered this run (from the event); the run
    promotes everything up to bronze's current snapshot, which includes it. Returns the totals,
    with each batch's report under ``batches``.
    """
    logger = get_run_logger()
    if bronze_snapshot_id is not None:
        logger.info("triggered by bronze snapshot %s", bronze_snapshot_id)
    settings = settings or load_settings()
    if crash_at is not None and crash_at not in CRASH_POINTS:
        raise ValueError(f"crash_at must be one of {CRASH_POINTS}, got {crash_at!r}")
    batches: list[dict] = []
    head: list[int | None] = [None]  # bronze's head at the first plan: commits after it wait for the next run
    while True:
        report = replan_on_conflict(lambda: _promote(settings, crash_at, logger, head), "silver", logger)
        if report["bronze_to"] is None:
            break
        batches.append(report)
        crash_if("batch-committed", crash_at)
    return _totals(batches) if batches else report


def _totals(batches: list[dict]) -> dict:
    """One report for the run: counts summed over its batches, the last snapshot of each table."""
    total = dict(batches[0], batches=batches, reasons={}, committed={})
    total["bronze_to"] = batches[-1]["bronze_to"]
    total["run_id"] = batches[-1]["run_id"]
    for name in ("bronze_records", "facts", "rejected", "duplicates_dropped", "replaced_by_earlier_arrival",
                 "users_touched", "users_rebuilt", "seconds"):
        total[name] = sum(batch[name] for batch in batches)
    total["seconds"] = round(total["seconds"], 3)
    for batch in batches:
        total["committed"].update(batch["committed"])
        for reason, count in batch["reasons"].items():
            total["reasons"][reason] = total["reasons"].get(reason, 0) + count
    return total


def _promote(settings: Settings, crash_at: str | None, logger, head: list[int | None]) -> dict:
    """One bounded batch, planned from the tables; ``head`` (a one-item box) is bronze's snapshot
    the run stops at, set by its first plan."""
    began = time.monotonic()
    # no Daft actors to start here: on a cluster the Daft jobs run on the warm host
    plan = plan_while_ray_starts(settings, plan_silver, settings, str(uuid.uuid4()), head[0], daft_workers=False)
    head[0] = plan.head
    report = SilverReport(run_id=plan.run_id)
    if plan.increment is None:
        logger.info("silver is up to date with bronze; nothing committed")
        return report.as_dict()
    report.bronze_from, report.bronze_to = plan.increment.after, plan.increment.upto
    prewarm_quality(settings)  # GX loads while the batch is read
    jobs = daft_jobs(settings, use_ray(settings))
    checked = check_bronze(settings, plan, jobs)
    try:
        report.bronze_records = checked.rows
        crash_if("read", crash_at)
        # the suite runs on the new facts before any commit: a `fail` stops here, `quarantine` rows move
        dq = check_new_facts(settings, plan.run_id, plan.increment.upto, jobs.call(silver_jobs.new_facts, settings, checked))
        # the three tables' locks in one request, held from the first commit to the last: one round
        # trip to the server instead of three (each took seconds on a loaded box)
        with table_lock(settings, *(spec.identifier for spec in SILVER_TABLES)):
            quarantined = commit_rejected(settings, plan, jobs, checked, dq.quarantined)
            report.rejected, report.reasons = quarantined.rows, quarantined.detail["reasons"]
            crash_if("rejected-committed", crash_at)
            promoted = commit_facts(settings, plan, jobs, checked, dq.facts)
            report.facts = promoted.rows
            report.duplicates_dropped = promoted.detail["duplicates_dropped"]
            report.replaced_by_earlier_arrival = promoted.detail["replaced_by_earlier_arrival"]
            report.users_touched = len(promoted.detail["users"])
            crash_if("facts-committed", crash_at)
            dimension = commit_users(settings, plan, jobs, checked, promoted.detail["users"])
            report.users_rebuilt = dimension.detail["rebuilt"]
    finally:
        jobs.drop(checked.key)
    for spec, outcome in zip(SILVER_TABLES, (quarantined, promoted, dimension)):
        if outcome.snapshot_id is not None:
            report.committed[spec.identifier] = outcome.snapshot_id
            emit_table_committed(settings, spec.identifier, "silver", outcome.snapshot_id, report.run_id,
                                 rows_written=outcome.rows, rows_rejected=report.rejected,
                                 upstream_snapshot_id=report.bronze_to)
    publish_counts("promote-silver", {
        "bronze records read": report.bronze_records, "facts written": report.facts,
        "rejected": report.rejected, **{f"rejected {k}": v for k, v in sorted(report.reasons.items())},
        "duplicates dropped": report.duplicates_dropped, "users touched": report.users_touched,
        "seconds": round(time.monotonic() - began, 3),
    }, f"bronze snapshots {report.bronze_from} → {report.bronze_to} into silver")
    report.seconds = round(time.monotonic() - began, 3)
    logger.info(
        "silver: %d bronze records -> %d facts, %d rejected %s, %d duplicates dropped, %d users; %.2fs",
        report.bronze_records, report.facts, report.rejected, report.reasons, report.duplicates_dropped,
        report.users_touched, report.seconds,
    )
    return report.as_dict()
