"""Replay of quarantined rows: after a fix (a contract change, a corrected setting, a new enum value
in a suite), re-check silver.conversion_events_rejected with today's contract and suite; the rows
now valid are promoted to silver exactly once and leave the quarantine, the rest stay.

Exactly once and idempotent: an event silver already holds is never appended again (checked
against the facts by event_id, one row per event by first arrival), and the promoted rows are
deleted from the quarantine after the facts commit, so a crash between the commits is finished by
the next replay (the record found in silver under its own bronze coordinates) and a second replay
promotes nothing. A now-valid copy of an event silver holds from another arrival stays quarantined
(every bronze record stays accounted for once, as `lakehouse verify` checks). The touched users' SCD2 versions are rebuilt
from their facts, then gold is built for the touched days and users. Each commit's snapshot
summary says ``lakehouse.replay``; the suite's results go to audit.dq_results.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Optional

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.catalog import io_config, open_catalog
from tasks.commits import REPORT_KEY, RUN_ID_KEY, commit_rows, conform
from tasks.lineage.run import emits_lineage
from tasks.orchestration import TRANSIENT_RETRY, publish_counts, table_lock
from tasks.quality import replay, runner, views
from tasks.quality.steps import record_results
from tasks.quality.suites import SILVER_FACTS_SUITE, load_suite
from tasks.settings import Settings, load_settings
from tasks.tables import (
    BRONZE_CONVERSION_EVENTS_RAW,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
    ensure_table,
)

REPLAY_KEY = "lakehouse.replay"


@dataclass(frozen=True)
class ReplayPlan:
    run_id: str
    selected: int = 0  # quarantined records re-checked
    facts: pa.Table | None = None  # events to append (not in silver yet, one per event)
    cleared: tuple[tuple[str, int, int], ...] = ()  # records now valid: they leave the quarantine
    users: tuple[str, ...] = ()  # users of the now-valid events: their SCD2 versions are rebuilt
    facts_snapshot: int | None = None  # silver.fact_conversions as checked against
    still_quarantined: int = 0
    now_valid: int = 0


@dataclass
class ReplayReport:
    run_id: str
    dry_run: bool = False
    selected: int = 0
    now_valid: int = 0
    promoted: int = 0
    already_in_silver: int = 0
    still_quarantined: int = 0
    users_rebuilt: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    gold: dict | None = None
    seconds: float = 0.0


@task(**TRANSIENT_RETRY)
def plan_replay(settings: Settings, run_id: str, reason: str | None, since: datetime | None) -> ReplayPlan:
    """Read the chosen quarantine rows (and bronze's value where the quarantine kept none), check
    them with the contract and the silver suite, and find which events silver lacks."""
    import daft
    from pyiceberg.expressions import In

    from tasks.transforms import silver

    catalog = open_catalog(settings, "silver")
    rejected_table = ensure_table(catalog, settings, SILVER_CONVERSION_EVENTS_REJECTED)
    if rejected_table.current_snapshot() is None:
        return ReplayPlan(run_id)
    chosen = replay.selected(rejected_table.scan().to_arrow(), reason, since)
    if chosen.num_rows == 0:
        return ReplayPlan(run_id)
    missing = [k for k, v in zip(zip(*(chosen.column(c).to_pylist() for c in replay.KEY)), chosen.column("value").to_pylist())
               if v is None]
    bronze = pa.table({"topic": pa.array([], pa.string()), "partition": pa.array([], pa.int32()),
                       "offset": pa.array([], pa.int64()), "value": pa.array([], pa.binary())})
    if missing:
        bronze = ensure_table(catalog, settings, BRONZE_CONVERSION_EVENTS_RAW).scan(
            row_filter=replay.records_filter(missing, ("topic", "partition", "offset")),
            selected_fields=("topic", "partition", "offset", "value")).to_arrow()
    checked = silver.validate(daft.from_arrow(replay.as_records(chosen, bronze)), settings.silver_max_value_bytes)
    valid = silver.valid(checked).to_arrow()
    if valid.num_rows and settings.dq_enabled:
        suite = load_suite(settings, SILVER_FACTS_SUITE)
        now = datetime.now(timezone.utc)
        outcomes = runner.evaluate(suite, views.fact_view(valid, suite.columns(), now))
        record_results(settings, "silver", outcomes, run_id=run_id, flow="replay-quarantine", table=suite.table,
                       snapshot_id=None, suite=suite.name, evaluated_at=now)
        stay = replay.still_failing(outcomes)
        valid = valid.filter(pa.array([i not in stay for i in range(valid.num_rows)]))
    facts_table = ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS)
    current = facts_table.current_snapshot()
    first = silver.first_arrivals(daft.from_arrow(valid)).to_arrow() if valid.num_rows else valid
    ids = first.column("event_id").to_pylist() if first.num_rows else []
    stored: dict[str, tuple] = {}
    if ids and current is not None:
        found = facts_table.scan(row_filter=In("event_id", ids), selected_fields=("event_id", *replay.KEY)).to_arrow()
        stored = {r["event_id"]: tuple(r[k] for k in replay.KEY) for r in found.to_pylist()}
    fate = replay.sort_out(first, stored)
    new = first.filter(pa.array([f == "new" for f in fate], pa.bool_())) if ids else first
    moved = first.filter(pa.array([f in ("new", "recovered") for f in fate], pa.bool_())) if ids else first
    users = sorted({u for u in moved.column("user_id").to_pylist() if u is not None}) if moved.num_rows else []
    cleared = tuple(zip(*(moved.column(c).to_pylist() for c in replay.KEY))) if moved.num_rows else ()
    return ReplayPlan(run_id, chosen.num_rows, silver.facts(daft.from_arrow(new)).to_arrow() if new.num_rows else None,
                      cleared, tuple(users), current.snapshot_id if current is not None else None,
                      chosen.num_rows - len(cleared), valid.num_rows)


def _summary(plan: ReplayPlan, detail: dict) -> dict[str, str]:
    return {RUN_ID_KEY: plan.run_id, REPORT_KEY: json.dumps(detail, sort_keys=True, default=str),
            REPLAY_KEY: json.dumps({"run_id": plan.run_id, **detail}, sort_keys=True, default=str)}


def _current(table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot is not None else None


@task(cache_policy=NO_CACHE)
def commit_replay(settings: Settings, plan: ReplayPlan) -> dict[str, int]:
    """Facts first (only if silver is as planned), then the touched users' versions rebuilt from all
    their facts, then the replayed records out of the quarantine. No bronze watermark moves: the
    next promotion and gold see these as commits between promotions."""
    import daft
    from pyiceberg.expressions import In

    from tasks.transforms import silver

    catalog = open_catalog(settings, "silver")
    committed: dict[str, int] = {}
    if plan.facts is not None and plan.facts.num_rows:
        table = ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS)
        with table_lock(settings, SILVER_FACT_CONVERSIONS.identifier):
            committed[SILVER_FACT_CONVERSIONS.identifier] = commit_rows(
                table, conform(plan.facts, table), _summary(plan, {"replayed": plan.facts.num_rows}),
                still_current=lambda t: _current(t) == plan.facts_snapshot)
    if plan.users:
        facts_table = ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS)
        wanted = daft.from_arrow(pa.table({"user_id": pa.array(list(plan.users), pa.string())}))
        events = silver.events_of(daft.read_iceberg(facts_table, io_config=io_config(settings, "silver")), wanted)
        versions = silver.user_versions(daft.from_arrow(events.to_arrow())).to_arrow().sort_by(
            [("user_id", "ascending"), ("valid_from", "ascending")])
        users_table = ensure_table(catalog, settings, SILVER_DIM_USERS)
        before = _current(users_table)
        with table_lock(settings, SILVER_DIM_USERS.identifier):
            committed[SILVER_DIM_USERS.identifier] = commit_rows(
                users_table, conform(versions, users_table), _summary(plan, {"users": len(plan.users)}),
                still_current=lambda t: _current(t) == before, delete_filter=In("user_id", list(plan.users)))
    if plan.cleared:
        rejected = ensure_table(catalog, settings, SILVER_CONVERSION_EVENTS_REJECTED)
        with table_lock(settings, SILVER_CONVERSION_EVENTS_REJECTED.identifier):
            rejected.delete(replay.records_filter(plan.cleared), snapshot_properties=_summary(plan, {"cleared": len(plan.cleared)}))
            committed[SILVER_CONVERSION_EVENTS_REJECTED.identifier] = _current(rejected.refresh())
    return committed


@flow(name="replay-quarantine", log_prints=False)
@emits_lineage("replay-quarantine", "silver")
def replay_flow(reason: Optional[str] = None, since: Optional[datetime] = None, dry_run: bool = False,
                settings: Optional[Settings] = None, build_gold: bool = True) -> dict:
    """Re-check quarantined rows (optionally only those with ``reason`` among their codes, or
    quarantined from Kafka time ``since``); promote those now valid exactly once, then build gold.
    ``dry_run`` plans and reports, and commits nothing."""
    from tasks.orchestration import replan_on_conflict

    logger = get_run_logger()
    settings = settings or load_settings()
    began = time.monotonic()

    def attempt() -> ReplayReport:
        plan = plan_replay(settings, str(uuid.uuid4()), reason, since)
        promoted = plan.facts.num_rows if plan.facts is not None else 0
        report = ReplayReport(plan.run_id, dry_run, plan.selected, plan.now_valid, promoted,
                              plan.now_valid - promoted, plan.still_quarantined, len(plan.users))
        if not dry_run and (plan.cleared or promoted):
            report.committed = commit_replay(settings, plan)
        return report

    report = replan_on_conflict(attempt, "replay", logger)
    if report.promoted and build_gold and not dry_run:
        from flows.gold import gold_flow

        report.gold = gold_flow(settings=settings)
    report.seconds = round(time.monotonic() - began, 3)
    publish_counts("replay-quarantine", {
        "re-checked": report.selected, "now valid": report.now_valid, "promoted": report.promoted,
        "already in silver": report.already_in_silver, "still quarantined": report.still_quarantined,
        "users rebuilt": report.users_rebuilt, "dry run": dry_run}, f"replay of quarantined rows (reason {reason or 'any'})")
    logger.info("replay: %d re-checked, %d now valid, %d promoted, %d already in silver, %d still quarantined%s",
                report.selected, report.now_valid, report.promoted, report.already_in_silver,
                report.still_quarantined, " (dry run: nothing committed)" if dry_run else "")
    return asdict(report)
