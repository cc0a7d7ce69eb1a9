"""Gold tables on a handful of rows, against hand-computed expectations."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import daft
import pytest

from tasks.transforms import gold

T = datetime(2024, 12, 25, 10, tzinfo=timezone.utc)
D1, D2 = date(2024, 12, 25), date(2024, 12, 26)


@pytest.fixture
def facts():
    return daft.from_pydict({
        "event_id": ["a", "b", "c", "d", "e"],
        "event_date": [D1, D1, D1, D2, D1],
        "occurred_at": [T, T + timedelta(minutes=30), T + timedelta(hours=2), T + timedelta(days=1), T + timedelta(minutes=10)],
        "user_id": ["u1", None, "u1", "u2", "u2"],
        "user_plan": ["free", None, "pro", "pro", "free"],
        "success": [True, False, True, True, True],
        "direction": ["to_roman", "to_roman", "to_roman", "from_roman", "to_roman"],
        "latency_ms": [1.0, 3.0, 2.0, 5.0, 10.0],
        "endpoint": ["/v1/to-roman"] * 3 + ["/v1/from-roman", "/v1/to-roman"],
        "http_status": [200, 422, 200, 200, 200],
    })


@pytest.fixture
def users():
    return daft.from_pydict({
        "user_id": ["u1", "u1", "u2", "u2"],
        "user_plan": ["free", "pro", "free", "pro"],
        "user_country": ["DE", "DE", "FR", "FR"],
        "valid_from": [T, T + timedelta(hours=2), T + timedelta(minutes=10), T + timedelta(days=1)],
        "valid_to": [T + timedelta(hours=2), None, T + timedelta(days=1), None],
        "is_current": [False, True, False, True],
    })


def by(rows, *keys):
    return {tuple(r[k] for k in keys): r for r in rows}


def test_nearest_rank_percentiles():
    values = [15, 20, 35, 40, 50]
    assert [gold.nearest_rank(values, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    assert gold.nearest_rank([], 50) is None
    assert gold.nearest_rank([7.0], 99) == 7.0


def test_vectorized_nearest_ranks_match_the_definition():
    import pyarrow as pa

    lists = pa.array([[15.0, None, 50.0, 20.0, 40.0, 35.0], None, [], [None], [7.0]], pa.large_list(pa.float64()))
    p30, p50, p100 = gold.nearest_ranks(lists, (30, 50, 100))
    # first list without its null: 15 20 35 40 50 -> ranks ceil(1.5)=2, ceil(2.5)=3, 5
    assert p30.to_pylist() == [20.0, None, None, None, 7.0]
    assert p50.to_pylist() == [35.0, None, None, None, 7.0]
    assert p100.to_pylist() == [50.0, None, None, None, 7.0]
    assert gold.nearest_ranks(lists.slice(4), (50,))[0].to_pylist() == [7.0]


def test_daily_conversion_metrics(facts):
    rows = by(gold.daily_conversion_metrics(facts).to_pylist(), "event_date", "direction")
    day = rows[(D1, "to_roman")]
    # a, b, c, e: 4 requests, b failed; users u1, u2; b anonymous; latencies 1, 3, 2, 10
    assert (day["requests"], day["successes"], day["failures"]) == (4, 3, 1)
    assert day["success_rate"] == pytest.approx(0.75)
    assert (day["unique_users"], day["anonymous_requests"]) == (2, 1)
    assert day["avg_latency_ms"] == pytest.approx(4.0)
    assert (day["p50_latency_ms"], day["p95_latency_ms"], day["p99_latency_ms"]) == (2.0, 10.0, 10.0)
    other = rows[(D2, "from_roman")]
    assert (other["requests"], other["p50_latency_ms"], other["anonymous_requests"]) == (1, 5.0, 0)
    assert len(rows) == 2


def test_daily_plan_metrics_uses_the_plan_in_force(facts, users):
    rows = by(gold.daily_plan_metrics(facts, users).to_pylist(), "event_date", "user_plan")
    # D1: a (u1 free), c (u1 pro from 12:00), e (u2 free), b anonymous; D2: d (u2 pro)
    assert {k: (r["requests"], r["successes"], r["unique_users"]) for k, r in rows.items()} == {
        (D1, "free"): (2, 2, 2),
        (D1, "pro"): (1, 1, 1),
        (D1, "anonymous"): (1, 0, 0),
        (D2, "pro"): (1, 1, 1),
    }


def test_user_activity_summary(facts, users):
    rows = by(gold.user_activity_summary(facts, users).to_pylist(), "user_id")
    u1, u2 = rows[("u1",)], rows[("u2",)]
    assert (u1["requests"], u1["successes"], u1["failures"], u1["active_days"]) == (2, 2, 0, 1)
    assert (u1["first_seen_at"], u1["last_seen_at"]) == (T, T + timedelta(hours=2))
    assert (u1["to_roman_requests"], u1["from_roman_requests"], u1["current_plan"], u1["current_country"]) == (2, 0, "pro", "DE")
    assert (u2["requests"], u2["active_days"], u2["from_roman_requests"], u2["current_plan"]) == (2, 2, 1, "pro")
    assert len(rows) == 2  # anonymous calls have no summary


def test_user_daily_activity(facts):
    rows = by(gold.user_daily_activity(facts).to_pylist(), "user_id", "event_date")
    # u1 on D1: a (10:00, ok) and c (12:00, ok); u2 on D1: e (10:10); u2 on D2: d (from_roman)
    assert set(rows) == {("u1", D1), ("u2", D1), ("u2", D2)}
    u1 = rows[("u1", D1)]
    assert (u1["first_seen_at"], u1["last_seen_at"]) == (T, T + timedelta(hours=2))
    assert (u1["requests"], u1["successes"], u1["failures"], u1["to_roman_requests"], u1["from_roman_requests"]) == (2, 2, 0, 2, 0)
    assert (rows[("u2", D2)]["requests"], rows[("u2", D2)]["from_roman_requests"]) == (1, 1)


def test_user_summary_from_daily_rows_equals_the_summary_from_facts(facts, users):
    direct = gold.user_activity_summary(facts, users).sort("user_id").to_pylist()
    via_daily = gold.user_summary_from_daily(gold.user_daily_activity(facts), users).sort("user_id").to_pylist()
    assert via_daily == direct
    # only u2's rows in the input: only u2's summary, still over both of u2's days
    only_u2 = gold.user_summary_from_daily(gold.user_daily_activity(facts).where(daft.col("user_id") == "u2"), users)
    assert [(r["user_id"], r["requests"], r["active_days"]) for r in only_u2.to_pylist()] == [("u2", 2, 2)]


def test_hourly_api_usage(facts):
    rows = by(gold.hourly_api_usage(facts).to_pylist(), "event_hour", "endpoint", "http_status")
    ten = rows[(T, "/v1/to-roman", 200)]
    assert (ten["requests"], ten["avg_latency_ms"], ten["p95_latency_ms"]) == (2, 5.5, 10.0)
    assert rows[(T, "/v1/to-roman", 422)]["requests"] == 1
    assert rows[(T + timedelta(hours=2), "/v1/to-roman", 200)]["event_date"] == D1
    assert len(rows) == 4


def test_dim_date_covers_every_day_with_calendar_attributes():
    rows = gold.dim_date(date(2024, 12, 28), date(2025, 1, 1)).to_pylist()
    assert [r["date"] for r in rows] == [date(2024, 12, 28) + timedelta(days=i) for i in range(5)]
    sat, wed = rows[0], rows[4]
    assert (sat["day_of_week"], sat["is_weekend"], sat["iso_week"], sat["quarter"]) == (6, True, 52, 4)
    assert (wed["year"], wed["month"], wed["day"], wed["iso_week"], wed["is_weekend"]) == (2025, 1, 1, 1, False)
    assert gold.dim_date(date(2025, 1, 2), date(2025, 1, 1)).to_pylist() == []
