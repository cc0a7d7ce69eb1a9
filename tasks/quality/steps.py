"""The thin Prefect tasks of data quality: read what a check needs, run the pure runner, append
the results to audit.dq_results, publish the run's artifact. The flows call these; the logic is
in ``runner``, ``views`` and ``results``."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.catalog import open_catalog
from tasks.quality import results, runner, views
from tasks.quality.suites import GOLD_DAILY_SUITE, SILVER_FACTS_SUITE, Suite, check_override_names, load_suite
from tasks.settings import S3Role, Settings
from tasks.tables import AUDIT_DQ_RESULTS, SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS, ensure_table


class DataQualityError(RuntimeError):
    """A ``fail`` expectation was not met: the promotion stops before it commits anything."""


@dataclass(frozen=True)
class FactsChecked:
    """A silver batch after its suite: the facts to promote and the rows quarantined."""

    facts: object  # tasks.silver_jobs.NewFacts without the quarantined rows
    quarantined: pa.Table | None  # rows for silver.conversion_events_rejected, or None
    outcomes: tuple[runner.Outcome, ...] = ()
    seconds: float = 0.0


def prewarm(settings: Settings) -> None:
    """Import GX and build its context in a background thread while the batch is read and deduplicated
    (seconds on a fresh flow-run process), so the check finds it ready."""
    if settings.dq_enabled:
        import threading

        threading.Thread(target=runner.context, name="gx-prewarm", daemon=True).start()


@task(cache_policy=NO_CACHE)
def check_new_facts(settings: Settings, run_id: str, bronze_upto: int, found) -> FactsChecked:
    """Evaluate the silver suite on a promotion's new facts before anything is committed: record
    every outcome in audit.dq_results, raise on a ``fail``, split off the ``quarantine`` rows.

    ``found`` is ``silver_jobs.NewFacts``; a quarantined row that was to replace a stored copy
    (an earlier arrival) no longer deletes it."""
    if not settings.dq_enabled or found.rows.num_rows == 0:
        return FactsChecked(found, None)
    began = time.monotonic()
    logger = get_run_logger()
    check_override_names(settings)  # a misspelt override must not pass silently
    suite = load_suite(settings, SILVER_FACTS_SUITE)
    now = datetime.now(timezone.utc)
    view = views.fact_view(found.rows, suite.columns(), now)
    baseline = _volume_baseline(settings, found.rows, suite) if any(e.baseline for e in suite.expectations) else None
    outcomes, result = runner.validate(suite, view, baseline)
    verdict = _conclude(settings, "silver", "promote-silver", suite, outcomes, result, run_id, bronze_upto, now,
                        f"bronze-{bronze_upto}")
    if verdict.failed:
        raise DataQualityError(verdict.failure_message() + "; nothing committed")
    reasons = {e.name: e.reason_code for e in suite.expectations}
    kept, quarantined = results.split_quarantine(found.rows, verdict.quarantine, reasons,
                                                 SILVER_CONVERSION_EVENTS_REJECTED.schema.as_arrow())
    if quarantined.num_rows:
        logger.warning("data quality: %d facts quarantined (%s)", quarantined.num_rows,
                       ", ".join(o.describe() for o in outcomes if o.severity == "quarantine" and not o.success))
    gone = found.rows.take(pa.array(sorted(verdict.quarantine), pa.int64())).column("event_id").to_pylist()
    facts = replace(found, rows=kept, replaced_ids=results.without_ids(found.replaced_ids, gone))
    seconds = time.monotonic() - began
    logger.info("data quality: %s on %d facts, %d expectations, %d quarantined, %.2fs", suite.name, found.rows.num_rows,
                len(outcomes), quarantined.num_rows, seconds)
    return FactsChecked(facts, quarantined, tuple(outcomes), seconds)


def _volume_baseline(settings: Settings, facts: pa.Table, suite: Suite) -> float | None:
    """The trailing same-hour average of silver facts for the batch's newest event hour."""
    import pyarrow.compute as pc
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan, Or

    newest = pc.max(facts.column("occurred_at")).as_py()
    if newest is None:
        return None
    hour = newest.replace(minute=0, second=0, microsecond=0)
    windows = results.same_hour_windows(hour, settings.dq_volume_days)
    table = ensure_table(open_catalog(settings, "silver"), settings, SILVER_FACT_CONVERSIONS)
    if table.current_snapshot() is None:
        return None
    ranges = [And(GreaterThanOrEqual("occurred_at", s.isoformat()), LessThan("occurred_at", e.isoformat())) for s, e in windows]
    row_filter = ranges[0] if len(ranges) == 1 else Or(*ranges)
    history = table.scan(row_filter=row_filter, selected_fields=("occurred_at",)).to_arrow().column("occurred_at")
    return results.same_hour_baseline(history, windows)


def _conclude(settings: Settings, role: S3Role, flow: str, suite, outcomes, result, run_id: str,
              snapshot_id: int | None, now: datetime, page: str):
    """What every check does with its outcomes: append them to audit.dq_results, publish the
    artifact and the Data Docs page, log the warnings; returns the verdict for the caller to act on."""
    record_results(settings, role, outcomes, run_id=run_id, flow=flow, table=suite.table,
                   snapshot_id=snapshot_id, suite=suite.name, evaluated_at=now)
    publish_outcomes(settings, suite, outcomes, result, run_id, now, page)
    verdict = runner.decide(outcomes)
    for o in verdict.warnings:
        get_run_logger().warning("data quality warning: %s", o.describe())
    return verdict


def record_results(settings: Settings, role: S3Role, outcomes, **row_fields) -> None:
    """Append one audit.dq_results row per outcome (appends only: a retried commit cannot
    duplicate a conflicting one's rows, it re-applies this append on the new head)."""
    rows = results.result_rows(outcomes, **row_fields)
    from tasks.commits import naming_full_store

    table = ensure_table(open_catalog(settings, role), settings, AUDIT_DQ_RESULTS)
    with naming_full_store(table):  # a full store is named like any commit's, and is never retried
        table.append(rows.cast(table.schema().as_arrow()),
                     snapshot_properties={"lakehouse.run-id": row_fields["run_id"], "lakehouse.dq.suite": row_fields["suite"]})


@task(cache_policy=NO_CACHE)
def check_gold_days(settings: Settings, run_id: str, days: list | None, silver_snapshot: int | None,
                    committed: dict) -> tuple[runner.Outcome, ...]:
    """The gold suite on gold.daily_conversion_metrics for ``days`` (the days the build rebuilt;
    None: every day) against a recount of the silver facts snapshot it was built from; results to
    audit.dq_results. A ``fail`` fails the run after the build (gold is committed already)."""
    from pyiceberg.expressions import AlwaysTrue, In

    from tasks.tables import GOLD_DAILY_CONVERSION_METRICS

    if not settings.dq_enabled or days == [] or silver_snapshot is None:
        return ()
    suite = load_suite(settings, GOLD_DAILY_SUITE)
    catalog = open_catalog(settings, "gold")
    wanted = AlwaysTrue() if days is None else In("event_date", [d.isoformat() for d in days])
    gold = ensure_table(catalog, settings, GOLD_DAILY_CONVERSION_METRICS)
    metrics = gold.scan(row_filter=wanted).to_arrow()
    facts = ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS).scan(
        row_filter=wanted, selected_fields=("event_date", "direction", "success"), snapshot_id=silver_snapshot).to_arrow()
    now = datetime.now(timezone.utc)
    outcomes, result = runner.validate(suite, views.gold_daily_view(metrics, views.recount(facts)))
    checked = committed.get(GOLD_DAILY_CONVERSION_METRICS.identifier)
    if checked is None and gold.current_snapshot() is not None:
        checked = gold.current_snapshot().snapshot_id
    verdict = _conclude(settings, "gold", "build-gold", suite, outcomes, result, run_id, checked, now,
                        f"gold-{checked}")
    if verdict.failed:
        raise DataQualityError(verdict.failure_message())
    return tuple(outcomes)


def publish_outcomes(settings: Settings, suite: Suite, outcomes, result, run_id: str, evaluated_at: datetime,
                     batch: str) -> None:
    """The run's Data Docs page (state folder) and its Prefect artifacts: a table of the
    expectations with pass/fail and a markdown summary linking to the page. Neither may fail a run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from tasks.quality.docs import build_page

    logger = get_run_logger()
    page = None
    if result is not None:
        try:
            page = build_page(settings, suite.name, run_id, batch, evaluated_at, result)
        except Exception as exc:  # noqa: BLE001 - the docs are a view; the results are in audit.dq_results
            logger.warning("data quality: Data Docs not built: %s", exc)
    key = "dq-" + suite.name.replace("_", "-")
    rows = [{"expectation": o.expectation, "severity": o.severity, "result": "pass" if o.success else "FAIL",
             "observed": o.observed_value, "unexpected": o.unexpected_count, "of": o.element_count} for o in outcomes]
    failing = [o for o in outcomes if not o.success]
    lines = [f"## Data quality: `{suite.name}` on `{suite.table}`", "",
             f"{len(outcomes) - len(failing)} of {len(outcomes)} expectations met (run `{run_id}`, {batch}).", ""]
    lines += [f"- **{o.expectation}** ({o.severity}): {o.observed_value}" for o in failing]
    if page is not None:
        lines += ["", f"Data Docs: [{page.name}]({page.as_uri()}) (`lakehouse dq docs`)"]
    try:
        create_table_artifact(key=key, table=rows, description=f"data quality: {suite.name}")
        create_markdown_artifact(key=f"{key}-summary", markdown="\n".join(lines), description=f"data quality: {suite.name}")
    except Exception as exc:  # noqa: BLE001 - outside a run or without the API: the audit table has it all
        logger.warning("data quality: artifact not published: %s", exc)
