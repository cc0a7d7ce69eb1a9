"""Reads and rows of the data-science gold tables; flows/gold.py commits them like its other tables.

gold.hourly_anomalies is incremental: the touched days' hourly metrics come from their silver facts,
every other day's from the table itself (its requests, error_rate and p95 columns are the metrics),
and the touched days are rescored together with the later days whose baselines read them. The
capacity forecast and its backtest are rebuilt whole from the table's hourly requests (a few
thousand numbers), so a new complete day or a late event reaches them on the next build.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import daft
import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, GreaterThanOrEqual, LessThan, Or

from tasks.catalog import io_config
from tasks.commits import StaleCommitError, upstream_snapshot
from tasks.scans import read_days
from tasks.settings import Settings
from tasks.tables import (
    GOLD_CAPACITY_FORECAST,
    GOLD_FORECAST_ACCURACY,
    GOLD_HOURLY_ANOMALIES,
    SILVER_FACT_CONVERSIONS,
    ensure_table,
)
from tasks.transforms import anomalies, forecast

FACT_COLUMNS = ["event_date", "occurred_at", "direction", "success", "latency_ms"]
METRICS_SCHEMA = pa.schema([("event_hour", pa.timestamp("us", tz="UTC")), ("direction", pa.string()),
                            ("requests", pa.int64()), ("error_rate", pa.float64()), ("p95_latency_ms", pa.float64())])


def anomaly_change(settings: Settings, catalog, plan) -> tuple:
    """(spec, rows, delete filter, report) replacing the hours of ``plan``'s touched days and of
    the days depending on them; with ``plan.full`` every hour."""
    facts_table = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier)
    io = io_config(settings, "gold")
    if plan.full:
        facts = daft.read_iceberg(facts_table, snapshot_id=plan.upto, io_config=io).select(*FACT_COLUMNS)
        rows = anomalies.score_hours(_metrics(anomalies.hourly_metrics(facts).to_arrow()))
        return GOLD_HOURLY_ANOMALIES, rows, AlwaysTrue(), {"days": "all", "hours": rows.num_rows}
    touched = sorted(plan.days)
    if not touched:
        return GOLD_HOURLY_ANOMALIES, None, None, {"days": 0}
    facts = read_days(facts_table, touched, FACT_COLUMNS, io, snapshot_id=plan.upto)
    fresh = _metrics(anomalies.hourly_metrics(facts).to_arrow()) if facts is not None else METRICS_SCHEMA.empty_table()
    table = ensure_table(catalog, settings, GOLD_HOURLY_ANOMALIES)
    kept = METRICS_SCHEMA.empty_table()
    if table.current_snapshot() is not None:
        since = _utc(anomalies.history_start(touched)).isoformat()
        stored = _metrics(table.scan(row_filter=GreaterThanOrEqual("event_hour", since),
                                     selected_fields=tuple(METRICS_SCHEMA.names)).to_arrow())
        stale = {(d - anomalies.EPOCH).days for d in touched}
        hours = stored.column("event_hour").cast(pa.int64()).to_pylist()
        kept = stored.filter(pa.array([h // anomalies.DAY_US not in stale for h in hours]))
    metrics = pa.concat_tables([kept, fresh])
    present = {anomalies.EPOCH + timedelta(days=h // anomalies.DAY_US)
               for h in metrics.column("event_hour").cast(pa.int64()).to_pylist()}
    days = sorted(anomalies.dependent_days(touched) & (present | set(touched)))
    rows = anomalies.score_hours(metrics, days)
    return GOLD_HOURLY_ANOMALIES, rows, days_filter(days), {"days": len(days), "hours": rows.num_rows}


def forecast_changes(settings: Settings, catalog, plan) -> list[tuple]:
    """The capacity forecast and its backtest, from gold.hourly_anomalies as this build left it."""
    table = ensure_table(catalog, settings, GOLD_HOURLY_ANOMALIES)
    if upstream_snapshot(table, SILVER_FACT_CONVERSIONS.identifier) != plan.upto:
        raise StaleCommitError(f"{GOLD_HOURLY_ANOMALIES.identifier} is not at silver snapshot {plan.upto}: "
                               "another run moved it; nothing committed")
    hourly = (table.scan(selected_fields=("event_hour", "direction", "requests")).to_arrow()
              if table.current_snapshot() is not None else METRICS_SCHEMA.empty_table())
    predicted, accuracy = forecast.capacity_tables(hourly)
    report = {"series": len({(r["direction"], r["metric"]) for r in predicted.select(["direction", "metric"]).to_pylist()})}
    return [(GOLD_CAPACITY_FORECAST, predicted, AlwaysTrue(), report),
            (GOLD_FORECAST_ACCURACY, accuracy, AlwaysTrue(), report)]


def days_filter(days: list[date]) -> BooleanExpression | None:
    """event_hour within any of ``days`` (UTC), as one range per run of consecutive days."""
    ranges: list[list[date]] = []
    for day in sorted(days):
        if ranges and ranges[-1][1] == day:
            ranges[-1][1] = day + timedelta(days=1)
        else:
            ranges.append([day, day + timedelta(days=1)])
    out = None
    for first, end in ranges:
        term = And(GreaterThanOrEqual("event_hour", _utc(first).isoformat()), LessThan("event_hour", _utc(end).isoformat()))
        out = term if out is None else Or(out, term)
    return out


def _metrics(table: pa.Table) -> pa.Table:
    return pa.Table.from_arrays([table.column(n).cast(METRICS_SCHEMA.field(n).type) for n in METRICS_SCHEMA.names],
                                schema=METRICS_SCHEMA)


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
