"""gold.hourly_anomalies, gold.capacity_forecast and gold.forecast_accuracy through the real gold
flow: simulated traffic with known incidents lands in a private lakehouse, and the tables are
checked against the records themselves (plain Python) and against the truth. Incremental builds
equal a full rebuild: tests/integration/test_gold_incremental.py (every gold table, through the
flow) and tests/unit/test_data_science_tables.py (these tables on traffic with late events)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from tasks.catalog import open_catalog
from tasks.simulator import Incident, TrafficProfile, generate
from tasks.tables import GOLD_CAPACITY_FORECAST, GOLD_FORECAST_ACCURACY, GOLD_HOURLY_ANOMALIES
from tests.integration.private_lakehouse import NOW, land_in_bronze
from tests.integration.test_gold_incremental import run_silver_and_gold

pytestmark = pytest.mark.stack

# The traffic ends at the last Sunday 23:00 UTC before now: whole hours (each bucket is one UTC
# hour), and the same weekdays every week, so the incidents always fall on busy weekdays and the
# seeded traffic is the same whatever day the test runs.
END = (NOW.replace(hour=0, minute=0, second=0) - timedelta(days=NOW.weekday())) - timedelta(hours=1)
DAYS = 22


def _at(days_back: int, hour: int) -> datetime:
    return (END - timedelta(days=days_back)).replace(hour=hour)


INCIDENTS = (
    Incident("error_burst", _at(2, 14), 1, "both", 0.6),
    Incident("latency_spike", _at(3, 15), 1, "to_roman", 6.0),
    Incident("traffic_drop", _at(4, 13), 1, "from_roman", 0.9),
)
PROFILE = TrafficProfile(events=24_000, days=DAYS, seed=3, end=END, seasonal=True, users=200, incidents=INCIDENTS,
                         duplicate_rate=0.01, late_rate=0.005, malformed_rate=0.0, wrong_conversion_rate=0.0)


def _hourly_truth(values: list[bytes]) -> dict[tuple[datetime, str], tuple[int, float, float]]:
    """(hour, direction) -> (requests, error rate, nearest-rank p95) of the unique events."""
    seen, groups = set(), defaultdict(list)
    for value in values:
        event = json.loads(value)
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        occurred = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
        groups[(occurred.replace(minute=0, second=0, microsecond=0), event["direction"])].append(event)
    out = {}
    for key, events in groups.items():
        latencies = sorted(e["latency_ms"] for e in events)
        p95 = latencies[max(1, math.ceil(0.95 * len(latencies))) - 1]
        out[key] = (len(events), sum(1 for e in events if not e["success"]) / len(events), p95)
    return out


def _outages(truth: dict) -> set[tuple[datetime, str]]:
    """The (hour, direction) keys without calls that get an outage row: inside their day's span of
    calls (first to last hour with a call, either direction), with a baseline of hours with calls
    (2 of the same hour in the 4 trailing weeks, else 2 of the same hour on days of the same kind
    in the 14 trailing days)."""
    days = defaultdict(set)
    for hour, _ in truth:
        days[hour.date()].add(hour)
    out = set()
    for hours in days.values():
        hour = min(hours)
        while hour <= max(hours):
            for d in {d for _, d in truth}:
                weekly = [k for k in range(1, 5) if (hour - timedelta(weeks=k), d) in truth]
                daily = [k for k in range(1, 15) if (hour - timedelta(days=k), d) in truth
                         and ((hour - timedelta(days=k)).weekday() >= 5) == (hour.weekday() >= 5)]
                if (hour, d) not in truth and (len(weekly) >= 2 or len(daily) >= 2):
                    out.add((hour, d))
            hour += timedelta(hours=1)
    return out


def test_anomalies_and_forecast_from_traffic_with_known_incidents(private):
    values = [r.value for r in generate(PROFILE)]
    land_in_bronze(private, values, at=NOW)
    report = run_silver_and_gold(private)
    assert {s.identifier for s in (GOLD_HOURLY_ANOMALIES, GOLD_CAPACITY_FORECAST, GOLD_FORECAST_ACCURACY)} \
        <= set(report["committed"])

    catalog = open_catalog(private, "serving")
    rows = catalog.load_table(GOLD_HOURLY_ANOMALIES.identifier).scan().to_arrow().to_pylist()
    truth = _hourly_truth(values)
    outages = _outages(truth)
    assert {(r["event_hour"], r["direction"]) for r in rows} == set(truth) | outages
    for r in rows:
        if (r["event_hour"], r["direction"]) in outages:  # no calls: 0 requests scored, nothing else
            assert r["requests"] == 0 and r["requests_baseline"] is not None and r["requests_score"] <= 0, r
            assert (r["error_rate"], r["error_rate_score"], r["p95_latency_ms"], r["p95_latency_ms_score"]) == \
                (None, None, None, None), r
            assert not r["error_rate_anomaly"] and not r["p95_latency_ms_anomaly"], r
            continue
        requests, error_rate, p95 = truth[(r["event_hour"], r["direction"])]
        assert (r["requests"], r["p95_latency_ms"]) == (requests, p95)
        assert r["error_rate"] == pytest.approx(error_rate)
        assert r["is_anomaly"] == (r["requests_anomaly"] or r["error_rate_anomaly"] or r["p95_latency_ms_anomaly"])
    by_key = {(r["event_hour"], r["direction"]): r for r in rows}
    for d in ("to_roman", "from_roman"):
        assert by_key[(_at(2, 14), d)]["error_rate_anomaly"], by_key[(_at(2, 14), d)]
    assert by_key[(_at(3, 15), "to_roman")]["p95_latency_ms_anomaly"], by_key[(_at(3, 15), "to_roman")]
    drop = by_key[(_at(4, 13), "from_roman")]
    assert drop["requests_anomaly"] and drop["requests_score"] < 0, drop
    incident_keys = {(i.start, d) for i in INCIDENTS for d in i.directions}
    false_alarms = [k for k, r in by_key.items() if r["is_anomaly"] and k not in incident_keys
                    and k[0] >= END - timedelta(days=DAYS - 7)]
    assert len(false_alarms) <= 0.03 * len(rows), false_alarms
    assert {r["baseline_weeks"] for r in rows} >= {0, 2}

    forecast = catalog.load_table(GOLD_CAPACITY_FORECAST.identifier).scan().to_arrow().to_pylist()
    accuracy = catalog.load_table(GOLD_FORECAST_ACCURACY.identifier).scan().to_arrow().to_pylist()
    newest = max(hour for hour, _ in truth).date()
    assert {r["history_through"] for r in forecast} == {newest - timedelta(days=1)}
    series = {(r["direction"], r["metric"]) for r in forecast}
    assert series == {(d, m) for d in ("to_roman", "from_roman") for m in ("daily_requests", "peak_hour_requests")}
    assert len(forecast) == 4 * 14
    for key in series:
        mine = sorted((r for r in forecast if (r["direction"], r["metric"]) == key), key=lambda r: r["horizon_days"])
        assert [r["forecast_date"] for r in mine] == [newest + timedelta(days=j) for j in range(14)]
        scored = {r["model"]: r["mape"] for r in accuracy if (r["direction"], r["metric"]) == key}
        assert set(scored) == {"seasonal_naive", "holt_winters"}
        assert mine[0]["model"] == min(scored, key=lambda m: (scored[m], m != "seasonal_naive"))
