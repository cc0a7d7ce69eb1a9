"""The data-science gold tables' reads and commits on a local catalog (SQLite + files, Daft native,
no services): silver commits in steps, late events included, built incrementally, equal a full
rebuild row for row."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pyarrow as pa
import pytest

from tasks.catalog import ensure_namespaces, open_catalog
from tasks.commits import commit_rows, conform, upstream_key
from tasks.data_science import anomaly_change, forecast_changes
from tasks.settings import load_settings
from tasks.simulator import Incident, TrafficProfile, generate
from tasks.tables import DATA_SCIENCE_TABLES, SILVER_FACT_CONVERSIONS, ensure_table
from tests.unit.embedded_lake import embedded_env, only_env

END = datetime(2025, 3, 3, 10, tzinfo=timezone.utc)
OUTAGE = datetime(2025, 2, 26, 14, tzinfo=timezone.utc)  # from_roman loses every call for 2 hours
PROFILE = TrafficProfile(
    events=15_000, days=24, seed=5, end=END, seasonal=True, malformed_rate=0.0, duplicate_rate=0.0, late_rate=0.01,
    incidents=(Incident("error_burst", datetime(2025, 2, 25, 14, tzinfo=timezone.utc), 1, "both", 0.6),
               Incident("traffic_drop", OUTAGE, 2, "from_roman", 1.0)),
)
FACTS = pa.schema([("event_id", pa.string()), ("occurred_at", pa.timestamp("us", tz="UTC")),
                   ("event_date", pa.date32()), ("direction", pa.string()), ("success", pa.bool_()),
                   ("latency_ms", pa.float64())])


@pytest.fixture
def lake(tmp_path, monkeypatch):
    only_env(monkeypatch, embedded_env(tmp_path))  # whatever `make test` exported (LAKEHOUSE_CONFIG)
    (tmp_path / "warehouse").mkdir()
    settings = load_settings()
    catalog = open_catalog(settings, "admin")
    ensure_namespaces(catalog, settings)
    ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS)
    return settings, catalog


def _facts() -> list[dict]:
    rows = []
    for record in generate(PROFILE):
        event = json.loads(record.value)
        at = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
        rows.append({"event_id": event["event_id"], "occurred_at": at, "event_date": at.date(),
                     "direction": event["direction"], "success": event["success"], "latency_ms": float(event["latency_ms"])})
    return rows


def _append(catalog, rows: list[dict]) -> int:
    table = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier)
    table.append(conform(pa.Table.from_pylist(rows, schema=FACTS), table))
    return catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).current_snapshot().snapshot_id


def _build(settings, catalog, upto: int, rows: list[dict] | None) -> None:
    """What gold_flow's build_data_science commits: anomalies for the touched days, then the forecast."""
    plan = SimpleNamespace(full=rows is None, upto=upto, days=tuple(sorted({r["event_date"] for r in rows or []})))
    for change in [anomaly_change(settings, catalog, plan)]:
        _commit(settings, catalog, change, upto)
    for change in forecast_changes(settings, catalog, plan):
        _commit(settings, catalog, change, upto)


def _commit(settings, catalog, change, upto: int) -> None:
    spec, rows, where, _ = change
    table = ensure_table(catalog, settings, spec)
    rows = rows if rows is not None else table.schema().as_arrow().empty_table()
    commit_rows(table, conform(rows, table), {upstream_key(SILVER_FACT_CONVERSIONS.identifier): str(upto)},
                still_current=lambda t: True, delete_filter=where)


def _tables(catalog) -> dict[str, list[dict]]:
    return {spec.identifier: sorted(catalog.load_table(spec.identifier).scan().to_arrow().to_pylist(),
                                    key=lambda r: repr(sorted(r.items()))) for spec in DATA_SCIENCE_TABLES}


def test_incremental_builds_with_late_events_equal_a_full_rebuild(lake):
    settings, catalog = lake
    facts = sorted(_facts(), key=lambda r: r["occurred_at"])
    late = [r for r in facts if r["occurred_at"] < END - timedelta(days=10)][::40]  # re-dated below
    late = [{**r, "event_id": r["event_id"] + "-late"} for r in late]
    steps = [[r for r in facts if r["occurred_at"] < END - timedelta(days=5)],
             [r for r in facts if END - timedelta(days=5) <= r["occurred_at"] < END - timedelta(days=1)] + late,
             [r for r in facts if r["occurred_at"] >= END - timedelta(days=1)]]
    for rows in steps:
        _build(settings, catalog, _append(catalog, rows), rows)
    incremental = _tables(catalog)
    upto = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).current_snapshot().snapshot_id
    _build(settings, catalog, upto, None)
    full = _tables(catalog)
    for name in incremental:
        assert incremental[name] == full[name], f"{name} differs from a full rebuild"
    anomalies = incremental["gold.hourly_anomalies"]
    assert sum(r["requests"] for r in anomalies) == len(facts) + len(late)
    burst = [r for r in anomalies if r["event_hour"] == datetime(2025, 2, 25, 14, tzinfo=timezone.utc)]
    assert len(burst) == 2 and all(r["error_rate_anomaly"] for r in burst)
    outage = {r["event_hour"]: r for r in anomalies if r["direction"] == "from_roman"
              and OUTAGE <= r["event_hour"] < OUTAGE + timedelta(hours=2)}
    assert len(outage) == 2, outage
    assert all(r["requests"] == 0 and r["error_rate"] is None and r["requests_anomaly"] and r["requests_score"] < 0
               for r in outage.values()), outage
    assert len(incremental["gold.capacity_forecast"]) == 4 * 14 and len(incremental["gold.forecast_accuracy"]) == 8
