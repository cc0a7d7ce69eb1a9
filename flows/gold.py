"""Silver → gold: recompute only the days and users that silver commits touched.

The touched set comes from the data files silver appended since gold's watermark (their
occurred_day partitions, and the user_ids inside those files), never from a full scan. Each gold
table is then replaced for exactly those keys in one atomic overwrite, recording the silver
snapshot it was built from. ``full=True`` rebuilds every key.

The daily tables (and gold.user_daily_activity) read the facts of the touched days only. The user
summary of the touched users is aggregated from gold.user_daily_activity, never from their facts:
a late day touches most users, and their facts span every day.
"""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Optional

import daft
import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pyiceberg.expressions import AlwaysTrue, In

from tasks.catalog import io_config, open_catalog
from tasks.commits import (
    REPORT_KEY,
    RUN_ID_KEY,
    StaleCommitError,
    commit_rows,
    conform,
    snapshot_at_watermark,
    upstream_key,
    upstream_snapshot,
)
from tasks.compute import plan_while_ray_starts, use_ray
from tasks.quality.steps import check_gold_days
from tasks.scans import distinct_added, pending_range, plan_increment, read_days, read_user_rows
from tasks.lineage.run import emits_lineage
from tasks.settings import Settings, load_settings
from tasks.tables import (
    BRONZE_CONVERSION_EVENTS_RAW,
    GOLD_CAPACITY_FORECAST,
    GOLD_DAILY_CONVERSION_METRICS,
    GOLD_DAILY_PLAN_METRICS,
    GOLD_DIM_DATE,
    GOLD_FORECAST_ACCURACY,
    GOLD_HOURLY_ANOMALIES,
    GOLD_HOURLY_API_USAGE,
    GOLD_TABLES,
    GOLD_USER_ACTIVITY_SUMMARY,
    GOLD_USER_DAILY_ACTIVITY,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
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
from tasks.data_science import anomaly_change, forecast_changes
from tasks.transforms import gold

# Test affordance (SIGKILL this process, see tasks.orchestration.crash_if): "planned" (a plan with
# work, nothing committed); "conversion-metrics-committed" (gold.daily_conversion_metrics committed
# while the other daily tables' commits are in flight); "daily-committed" (the four daily tables
# committed, the user summary not); "summary-committed" (the summary committed, dim_date maybe not).
CRASH_POINTS = ("planned", "conversion-metrics-committed", "daily-committed", "summary-committed")
UPSTREAM = SILVER_FACT_CONVERSIONS.identifier
EPOCH = date(1970, 1, 1)
FACT_COLUMNS = ["event_date", "occurred_at", "user_id", "user_plan", "success", "direction",
                "latency_ms", "endpoint", "http_status"]
DAILY_ACTIVITY_COLUMNS = [f.name for f in GOLD_USER_DAILY_ACTIVITY.schema.fields]
DIM_USERS_COLUMNS = ["user_id", "user_plan", "user_country", "is_current"]


@dataclass(frozen=True)
class GoldPlan:
    run_id: str
    upto: int | None  # silver facts snapshot to build from; None: nothing to do
    watermarks: dict[str, int | None]
    users_snapshot: int | None = None  # silver.dim_users snapshot of the same silver promotion as ``upto``
    days: tuple[date, ...] = ()
    users: tuple[str, ...] = ()
    full: bool = False
    after: int | None = None  # the silver facts snapshot gold had reached (None: first or full build)


@dataclass
class GoldReport:
    run_id: str
    silver_from: Optional[int] = None  # the gold watermark it started from (None: first build or full)
    silver_to: Optional[int] = None
    full: bool = False
    days: int = 0
    users: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@task(**TRANSIENT_RETRY)
def plan_gold(settings: Settings, run_id: str, full: bool) -> GoldPlan:
    """The silver snapshot to build from and the days and users its new files touched.

    Gold builds from one silver promotion: the facts and dim_users snapshots that reached the same
    bronze snapshot. Silver commits facts before users, so when a promotion is half done (running,
    or crashed between its commits) gold builds from the last complete one and the rest waits for
    silver's users commit, which triggers gold again."""
    catalog = open_catalog(settings, "gold")
    facts = ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS)
    users_table = ensure_table(catalog, settings, SILVER_DIM_USERS)
    watermarks = {spec.identifier: upstream_snapshot(ensure_table(catalog, settings, spec), UPSTREAM)
                  for spec in GOLD_TABLES}
    head, users_snapshot = consistent_silver(facts, users_table)
    if head is None:
        return GoldPlan(run_id, None, watermarks)
    if full:
        return GoldPlan(run_id, head, watermarks, users_snapshot, full=True)
    pending = pending_range(facts, list(watermarks.values()), head=head)
    if pending is None:
        return GoldPlan(run_id, None, watermarks)
    after, upto = pending
    if upto != head:  # finishing a build interrupted between gold tables: the users it used
        users_snapshot = _users_snapshot_for(facts, users_table, upto)
    increment = plan_increment(facts, after, upto)
    # silver facts are partitioned by day(occurred_at): the added files name the touched days
    days = {EPOCH + timedelta(days=p[0]) for p in increment.partitions if p and p[0] is not None}
    users = distinct_added(facts, increment, "user_id")
    return GoldPlan(run_id, upto, watermarks, users_snapshot, tuple(sorted(days)), tuple(users), after=after)


def consistent_silver(facts, users) -> tuple[int | None, int | None]:
    """(facts snapshot, dim_users snapshot) of the newest silver promotion both tables finished;
    (None, None) while there is none."""
    bronze = BRONZE_CONVERSION_EVENTS_RAW.identifier
    if facts.current_snapshot() is None or users.current_snapshot() is None:
        return None, None
    reached = upstream_snapshot(users, bronze)  # users commit last: their watermark is the lower one
    if reached is None:
        return None, None
    head = snapshot_at_watermark(facts, bronze, reached)
    if head is None:
        raise LookupError(f"{facts.name()} has no snapshot at bronze snapshot {reached}, which "
                          f"{users.name()} reached: silver's bookkeeping is broken (run `lakehouse verify`)")
    return head, users.current_snapshot().snapshot_id


def _users_snapshot_for(facts, users, facts_snapshot: int) -> int:
    """The dim_users snapshot of the promotion that committed ``facts_snapshot``."""
    bronze = BRONZE_CONVERSION_EVENTS_RAW.identifier
    key = upstream_key(bronze)
    snapshot = facts.snapshot_by_id(facts_snapshot)
    while snapshot is not None and key not in (snapshot.summary.additional_properties if snapshot.summary else {}):
        snapshot = facts.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    found = (snapshot_at_watermark(users, bronze, int(snapshot.summary.additional_properties[key]))
             if snapshot is not None else None)
    if found is None:
        raise LookupError(f"{users.name()} has no snapshot matching {facts.name()} snapshot {facts_snapshot}")
    return found


def _built(spec: TableSpec, plan: GoldPlan) -> bool:
    """Already built up to the plan's silver snapshot (a rerun after a crash between tables)."""
    return plan.watermarks[spec.identifier] == plan.upto and not plan.full


def _replace(settings: Settings, spec: TableSpec, plan: GoldPlan, rows: pa.Table | None, delete_filter,
             report: dict, catalog=None, crash_at: str | None = None) -> int:
    """Replace the keys of one gold table with ``rows`` in one atomic commit (gold_flow holds the
    lock). No rows: delete the keys and commit the bookkeeping."""
    expected = plan.watermarks[spec.identifier]
    table = ensure_table(catalog or open_catalog(settings, "gold"), settings, spec)
    rows = rows if rows is not None else table.schema().as_arrow().empty_table()
    summary = {upstream_key(UPSTREAM): str(plan.upto), upstream_key(SILVER_DIM_USERS.identifier): str(plan.users_snapshot),
               RUN_ID_KEY: plan.run_id,
               REPORT_KEY: json.dumps({**report, "rows": rows.num_rows}, default=str)}
    snapshot = commit_rows(table, conform(rows, table), summary,
                           still_current=lambda t: upstream_snapshot(t, UPSTREAM) == expected,
                           delete_filter=delete_filter)
    if spec is GOLD_DAILY_CONVERSION_METRICS:
        crash_if("conversion-metrics-committed", crash_at)
    emit_table_committed(settings, spec.identifier, "gold", snapshot, plan.run_id, rows_written=rows.num_rows,
                         upstream_snapshot_id=plan.upto)
    return snapshot


def _replace_all(settings: Settings, plan: GoldPlan, changes: list[tuple], catalog=None,
                 crash_at: str | None = None) -> dict[str, int]:
    """Each (spec, rows, delete_filter, report) replaced in its own commit, side by side in threads
    (a commit mostly waits on files and the catalog). Tables already built this far are skipped.
    Returns the snapshot ids."""
    todo = [change for change in changes if not _built(change[0], plan)]
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="gold-commit") as pool:
        commits = {spec.identifier: pool.submit(copy_context().run, _replace, settings, spec, plan, rows, where,
                                                report, catalog, crash_at)
                   for spec, rows, where, report in todo}
    return {name: commit.result() for name, commit in commits.items()}


@task(cache_policy=NO_CACHE)
def build_daily_tables(settings: Settings, plan: GoldPlan, crash_at: str | None = None) -> dict[str, int]:
    """Daily conversion, daily plan, hourly usage and per-user daily activity for the touched days;
    returns snapshot ids."""
    catalog = open_catalog(settings, "gold")
    facts_table = catalog.load_table(UPSTREAM)
    users_table = ensure_table(catalog, settings, SILVER_DIM_USERS)
    days = list(plan.days)
    if plan.full:
        facts = daft.read_iceberg(facts_table, snapshot_id=plan.upto, io_config=io_config(settings, "gold")
                                  ).select(*FACT_COLUMNS).collect()
        days = [d for d in facts.select("event_date").distinct().to_pydict()["event_date"] if d is not None]
        where = AlwaysTrue()
    else:
        facts = read_days(facts_table, days, FACT_COLUMNS, io_config(settings, "gold"), snapshot_id=plan.upto)
        facts = facts.collect() if facts is not None else None
        where = In("event_date", days) if days else None
    dim = daft.read_iceberg(users_table, snapshot_id=plan.users_snapshot, io_config=io_config(settings, "gold"))
    report = {"days": len(days)}
    n = settings.compute_partitions  # each aggregate over n partitions hashed by its group keys
    tables = (
        (GOLD_DAILY_CONVERSION_METRICS, lambda f: gold.daily_conversion_metrics(f, n)),
        (GOLD_DAILY_PLAN_METRICS, lambda f: gold.daily_plan_metrics(f, dim, n) if dim is not None else None),
        (GOLD_HOURLY_API_USAGE, lambda f: gold.hourly_api_usage(f, n)),
        (GOLD_USER_DAILY_ACTIVITY, lambda f: gold.user_daily_activity(f, n)),
    )
    changes = []
    for spec, build in tables:  # gold rows are aggregates: all of them fit in memory at once
        frame = build(facts) if facts is not None and not _built(spec, plan) else None
        changes.append((spec, frame.to_arrow() if frame is not None else None, where, report))
    return _replace_all(settings, plan, changes, catalog, crash_at)


@task(cache_policy=NO_CACHE)
def build_user_summary(settings: Settings, plan: GoldPlan) -> dict[str, int]:
    """The touched users' summary (every user's with ``full``), aggregated from
    gold.user_daily_activity as build_daily_tables left it: at most one row per user and day."""
    if _built(GOLD_USER_ACTIVITY_SUMMARY, plan):
        return {}
    catalog = open_catalog(settings, "gold")
    daily_table = catalog.load_table(GOLD_USER_DAILY_ACTIVITY.identifier)
    if upstream_snapshot(daily_table, UPSTREAM) != plan.upto:
        raise StaleCommitError(f"{GOLD_USER_DAILY_ACTIVITY.identifier} is not at silver snapshot {plan.upto}: "
                               "another run moved it; nothing committed")
    users_table = ensure_table(catalog, settings, SILVER_DIM_USERS)
    users = list(plan.users)
    if plan.full:
        daily = daft.read_iceberg(daily_table, io_config=io_config(settings, "gold")) if daily_table.current_snapshot() else None
        dim = daft.read_iceberg(users_table, snapshot_id=plan.users_snapshot, io_config=io_config(settings, "gold"))
    else:  # the touched users' rows only: days x users, however many facts they had
        daily = read_user_rows(daily_table, users, DAILY_ACTIVITY_COLUMNS)
        dim = read_user_rows(users_table, users, DIM_USERS_COLUMNS, snapshot_id=plan.users_snapshot)
    frame = (gold.user_summary_from_daily(daily, dim, settings.compute_partitions)
             if daily is not None and dim is not None else None)
    rows = frame.to_arrow() if frame is not None else None
    where = AlwaysTrue() if plan.full else In("user_id", users) if users else None
    return _replace_all(settings, plan, [(GOLD_USER_ACTIVITY_SUMMARY, rows, where,
                                          {"users": "all" if plan.full else len(users)})], catalog)


@task(cache_policy=NO_CACHE)
def build_dim_date(settings: Settings, plan: GoldPlan) -> dict[str, int]:
    """Calendar rows from the first to the last day with data; tiny, so always rewritten whole."""
    if _built(GOLD_DIM_DATE, plan):
        return {}
    catalog = open_catalog(settings, "gold")
    facts_table = catalog.load_table(UPSTREAM)
    table = ensure_table(catalog, settings, GOLD_DIM_DATE)
    days = set(plan.days)
    if plan.full:
        days = set()
    elif table.current_snapshot() is not None:
        existing = table.scan(selected_fields=("date",)).to_arrow().column("date").to_pylist()
        days.update(existing)
    if plan.full or not days:
        for task_ in facts_table.scan(snapshot_id=plan.upto).plan_files():
            day = task_.file.partition[0]
            if day is not None:
                days.add(EPOCH + timedelta(days=day))
    rows = gold.dim_date(min(days), max(days)).to_arrow() if days else None
    return _replace_all(settings, plan, [(GOLD_DIM_DATE, rows, AlwaysTrue(), {"days": len(days)})], catalog)


@task(cache_policy=NO_CACHE)
def build_data_science(settings: Settings, plan: GoldPlan) -> dict[str, int]:
    """gold.hourly_anomalies for the touched days and the later days whose baselines read them,
    then the capacity forecast and its backtest from the committed hourly requests."""
    catalog = open_catalog(settings, "gold")
    committed = {}
    if not _built(GOLD_HOURLY_ANOMALIES, plan):
        committed.update(_replace_all(settings, plan, [anomaly_change(settings, catalog, plan)], catalog))
    if not (_built(GOLD_CAPACITY_FORECAST, plan) and _built(GOLD_FORECAST_ACCURACY, plan)):
        committed.update(_replace_all(settings, plan, forecast_changes(settings, catalog, plan), catalog))
    return committed


def _publish_latest_day(settings: Settings) -> None:
    """A markdown artifact with the newest day's metrics, for whoever opens the run in the UI."""
    from prefect.artifacts import create_markdown_artifact

    table = ensure_table(open_catalog(settings, "gold"), settings, GOLD_DAILY_CONVERSION_METRICS)
    rows = table.scan().to_arrow().to_pylist()
    if not rows:
        return
    latest = max(r["event_date"] for r in rows)
    lines = [f"# Conversions on {latest}", "", "| direction | requests | success rate | users | p95 ms |",
             "|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["event_date"] == latest), key=lambda r: r["direction"]):
        lines.append(f"| {r['direction']} | {r['requests']} | {r['success_rate']:.1%} | {r['unique_users']} | "
                     f"{r['p95_latency_ms']:.1f} |")
    create_markdown_artifact(key="gold-latest-day", markdown="\n".join(lines), description="gold.daily_conversion_metrics")


@flow(name="build-gold", log_prints=False)
@emits_lineage("build-gold", "gold")
def gold_flow(full: bool = False, silver_snapshot_id: Optional[int] = None, settings: Optional[Settings] = None,
              crash_at: Optional[str] = None) -> dict:
    """Rebuild gold for what changed in silver (or everything with ``full``); nothing new, no commit.

    ``silver_snapshot_id`` is the silver commit that triggered the run (from the event).
    ``crash_at`` (tests only) SIGKILLs the process at one of ``CRASH_POINTS``."""
    logger = get_run_logger()
    if silver_snapshot_id is not None:
        logger.info("triggered by silver snapshot %s", silver_snapshot_id)
    settings = settings or load_settings()
    if crash_at is not None and crash_at not in CRASH_POINTS:
        raise ValueError(f"crash_at must be one of {CRASH_POINTS}, got {crash_at!r}")
    return replan_on_conflict(lambda: _build(settings, full, logger, crash_at), "gold", logger)


def _build(settings: Settings, full: bool, logger, crash_at: str | None = None) -> dict:
    began = time.monotonic()
    # Every gold table's lock, in one request, from planning to the last commit: gold builds run one
    # at a time, and a second one waits, then plans from the first one's watermarks.
    with table_lock(settings, *(spec.identifier for spec in GOLD_TABLES)):
        plan = plan_while_ray_starts(settings, plan_gold, settings, str(uuid.uuid4()), full)
        report = GoldReport(run_id=plan.run_id, full=full)
        if plan.upto is None:
            logger.info("gold is up to date with silver; nothing committed")
            return report.as_dict()
        crash_if("planned", crash_at)
        use_ray(settings)  # before any Daft work: the runner can be chosen only once per process
        report.silver_from = plan.after
        report.silver_to, report.days, report.users = plan.upto, len(plan.days), len(plan.users)
        calendar = build_dim_date.submit(settings, plan)  # tiny and independent: beside the daily tables
        report.committed.update(build_daily_tables(settings, plan, crash_at))
        crash_if("daily-committed", crash_at)
        report.committed.update(build_user_summary(settings, plan))  # reads what the daily tables committed
        crash_if("summary-committed", crash_at)
        report.committed.update(calendar.result())
        report.committed.update(build_data_science(settings, plan))
    check_gold_days(settings, plan.run_id, None if plan.full else list(plan.days), plan.upto, report.committed)
    publish_counts("build-gold", {"days rebuilt": report.days, "users rebuilt": report.users,
                                  "tables committed": len(report.committed), "full": full,
                                  "seconds": round(time.monotonic() - began, 3)},
                   f"gold from silver snapshot {plan.upto}")
    _publish_latest_day(settings)
    report.seconds = round(time.monotonic() - began, 3)
    logger.info("gold: %s build of %d days and %d users from silver snapshot %s; %.2fs",
                "full" if full else "incremental", report.days, report.users, plan.upto, report.seconds)
    return report.as_dict()
