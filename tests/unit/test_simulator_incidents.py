"""Traffic with known truth: trend, seasonality and injected incidents, opt-in and deterministic."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from tasks.simulator import (
    Incident,
    TrafficProfile,
    choose_incidents,
    generate,
    parse_incident,
    random_incidents,
    write_truth,
)

END = datetime(2025, 2, 1, tzinfo=timezone.utc)
CLEAN = dict(duplicate_rate=0.0, late_rate=0.0, malformed_rate=0.0, wrong_conversion_rate=0.0)


def _hour(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def _fingerprint(profile: TrafficProfile) -> str:
    digest = hashlib.sha256()
    for r in generate(profile):
        digest.update(repr((r.key, r.value, r.timestamp_ms, r.partition, r.kind, r.detail)).encode())
    return digest.hexdigest()


def _hourly(profile: TrafficProfile) -> dict[tuple[str, str], dict]:
    """(UTC hour 'YYYY-MM-DDTHH', direction) -> requests, failures, sorted latencies, from the JSON."""
    out: dict[tuple[str, str], dict] = defaultdict(lambda: {"requests": 0, "failures": 0, "latencies": []})
    for record in generate(profile):
        event = json.loads(record.value)
        row = out[(event["occurred_at"][:13], event["direction"])]
        row["requests"] += 1
        row["failures"] += not event["success"]
        row["latencies"].append(event["latency_ms"])
    for row in out.values():
        row["latencies"].sort()
    return out


def _p95(values: list[float]) -> float:
    return values[int(0.95 * len(values))]


def test_defaults_send_exactly_the_records_of_earlier_versions():
    # digests recorded from tasks/simulator.py before the opt-in shape existed
    assert _fingerprint(TrafficProfile(events=20_000, days=3, seed=42)) == \
        "78b7d88fb26639d3d0b48ac55f40fe1e849ddd6e998f4d17874f759ea5424800"
    assert _fingerprint(TrafficProfile(events=5000, days=7, seed=7, end=datetime(2025, 3, 4, 5, 6, 7,
                                                                                 tzinfo=timezone.utc))) == \
        "c1887e6cdd4cd83ff2e132f5408a52a1e42d8affb4d72ddb992b2168239bd2c9"


def test_shaped_traffic_is_deterministic_for_a_seed_and_differs_across_seeds():
    incidents = random_incidents(END - timedelta(days=3), END, 2, seed=5)
    a = TrafficProfile(events=3000, days=3, seed=5, end=END, trend=0.1, seasonal=True, incidents=incidents)
    b = TrafficProfile(events=3000, days=3, seed=5, end=END, trend=0.1, seasonal=True, incidents=incidents)
    c = TrafficProfile(events=3000, days=3, seed=6, end=END, trend=0.1, seasonal=True, incidents=incidents)
    assert _fingerprint(a) == _fingerprint(b) != _fingerprint(c)
    assert sum(1 for _ in generate(a)) == 3000  # incidents reshape the hours, never the record count


def test_incidents_change_only_their_hours_and_directions():
    drop = Incident("traffic_drop", _hour("2025-01-31T14:00"), 2, "to_roman", 0.6)
    burst = Incident("error_burst", _hour("2025-01-31T18:00"), 1, "both", 0.25)
    spike = Incident("latency_spike", _hour("2025-01-31T10:00"), 1, "from_roman", 4.0)
    base = TrafficProfile(events=120_000, days=2, seed=3, end=END, **CLEAN)
    hurt = TrafficProfile(events=120_000, days=2, seed=3, end=END, incidents=(drop, burst, spike), **CLEAN)
    before, after = _hourly(base), _hourly(hurt)

    # traffic drop: to_roman keeps ~40% of its calls, from_roman keeps its volume
    for h in ("2025-01-31T14", "2025-01-31T15"):
        assert 0.3 < after[(h, "to_roman")]["requests"] / before[(h, "to_roman")]["requests"] < 0.5
        assert 0.9 < after[(h, "from_roman")]["requests"] / before[(h, "from_roman")]["requests"] < 1.1
    # error burst: ~4% failures normally, 4% + 25% * 96% ~ 28% in both directions
    for d in ("to_roman", "from_roman"):
        rate = after[("2025-01-31T18", d)]["failures"] / after[("2025-01-31T18", d)]["requests"]
        assert before[("2025-01-31T18", d)]["failures"] / before[("2025-01-31T18", d)]["requests"] < 0.08
        assert 0.2 < rate < 0.37
    # latency spike: from_roman's p95 is ~4x, to_roman's untouched
    spiked = _p95(after[("2025-01-31T10", "from_roman")]["latencies"])
    assert 3.0 < spiked / _p95(before[("2025-01-31T10", "from_roman")]["latencies"]) < 5.5
    assert _p95(after[("2025-01-31T10", "to_roman")]["latencies"]) < 2 * _p95(before[("2025-01-31T10", "to_roman")]["latencies"])
    # an hour without incidents keeps its failures and latency shape
    quiet = ("2025-01-31T03", "to_roman")
    assert abs(after[quiet]["failures"] / after[quiet]["requests"]
               - before[quiet]["failures"] / before[quiet]["requests"]) < 0.03


def test_trend_and_weekly_seasonality_shape_the_volume():
    profile = TrafficProfile(events=100_000, days=28, seed=1, end=END, trend=0.2, seasonal=True, **CLEAN)
    per_day: dict[str, int] = defaultdict(int)
    for (hour, _), row in _hourly(profile).items():
        per_day[hour[:10]] += row["requests"]
    days = sorted(per_day)
    first_week, last_week = sum(per_day[d] for d in days[:7]), sum(per_day[d] for d in days[-7:])
    assert 1.5 < last_week / first_week < 1.9  # 1.2 ** 3 = 1.73 over three weeks
    wednesday = [per_day[d] for d in days if datetime.fromisoformat(d).weekday() == 2]
    sunday = [per_day[d] for d in days if datetime.fromisoformat(d).weekday() == 6]
    assert sum(sunday) / sum(wednesday) < 0.65  # 0.55 / 1.06 of the weekday profile


def test_truth_file_names_each_incident(tmp_path):
    incidents = choose_incidents(["latency_spike@2025-01-31T10+2:from_roman*3"], 2, END, 3, seed=9)
    profile = TrafficProfile(events=100, days=3, seed=9, end=END, incidents=incidents)
    write_truth(profile, tmp_path / "out" / "truth.json")
    truth = json.loads((tmp_path / "out" / "truth.json").read_text())
    assert len(truth["incidents"]) == 3
    assert {"kind": "latency_spike", "direction": "from_roman", "start": "2025-01-31T10:00:00Z",
            "end": "2025-01-31T12:00:00Z", "hours": 2, "magnitude": 3.0} in truth["incidents"]
    for item in truth["incidents"]:
        assert set(item) == {"kind", "direction", "start", "end", "hours", "magnitude"}


def test_random_incidents_are_seeded_apart_and_skip_the_first_week():
    start = END - timedelta(days=28)
    picked = random_incidents(start, END, 12, seed=4)
    assert picked == random_incidents(start, END, 12, seed=4) != random_incidents(start, END, 12, seed=5)
    assert {i.kind for i in picked} == {"error_burst", "latency_spike", "traffic_drop"}
    assert all(i.start >= start + timedelta(days=7) and i.end <= END for i in picked)
    for a, b in zip(picked, picked[1:]):
        assert a.end + timedelta(hours=2) <= b.start


@pytest.mark.parametrize("text, message", [
    ("error_burst@2025-01-31", "is not KIND@"),
    ("fire@2025-01-31T10", "kind must be one of"),
    ("error_burst@2025-01-31T10:sideways", "direction must be one of"),
    ("latency_spike@2025-01-31T10*0.5", "latency factor > 1"),
    ("traffic_drop@2025-01-31T10*1.5", "share in (0, 1]"),
])
def test_bad_incidents_are_refused_naming_the_problem(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        parse_incident(text)


def test_an_incident_outside_the_span_is_refused():
    with pytest.raises(ValueError, match="outside the span"):
        TrafficProfile(events=10, days=1, end=END, incidents=(parse_incident("error_burst@2024-06-01T10"),))


def test_cli_refuses_a_bad_incident_in_one_line_with_exit_2():
    from flows.cli import app

    result = CliRunner().invoke(app, ["produce", "--incident", "error_burst@tomorrow"])
    assert result.exit_code == 2
    assert "is not KIND@" in result.output and "Traceback" not in result.output
