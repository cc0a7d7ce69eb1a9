"""gold.capacity_forecast and gold.forecast_accuracy's pure functions, on series with known answers."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from tasks.transforms import forecast
from tasks.transforms.forecast import (
    backtest,
    capacity_tables,
    daily_series,
    holt_winters,
    seasonal_naive,
    trim_lead_in,
)

WEEK = [100.0, 120.0, 130.0, 125.0, 110.0, 60.0, 50.0]


def _hourly(rows: list[tuple[datetime, str, int]]) -> pa.Table:
    hour, direction, requests = zip(*rows)
    return pa.table({"event_hour": pa.array(hour, pa.timestamp("us", tz="UTC")), "direction": list(direction),
                     "requests": pa.array(requests, pa.int64())})


def _series_hours(values: list[float], first: date, direction: str = "to_roman") -> list[tuple]:
    """One day's requests split over two hours (a third and two thirds): peak = 2/3 of the day."""
    rows = []
    for i, v in enumerate(values):
        day = datetime(first.year, first.month, first.day, tzinfo=timezone.utc) + timedelta(days=i)
        rows.append((day + timedelta(hours=3), direction, int(v) // 3))
        rows.append((day + timedelta(hours=15), direction, int(v) - int(v) // 3))
    return rows


def test_seasonal_naive_repeats_last_week_with_errors_growing_per_week():
    y = np.array(WEEK + [v + 7 for v in WEEK])  # every seasonal difference is 7
    result = seasonal_naive(y, 9)
    assert list(result.mean) == [v + 7 for v in WEEK] + [107.0, 127.0]
    assert list(result.sd[:7]) == pytest.approx([7.0] * 7)
    assert list(result.sd[7:]) == pytest.approx([7 * math.sqrt(2)] * 2)  # two weeks ahead


def test_holt_winters_follows_a_clean_trend_and_weekly_season():
    t = np.arange(56)
    y = 1000 + 5 * t + np.array(WEEK * 8) - np.mean(WEEK)
    result = holt_winters(y, 14)
    truth = 1000 + 5 * np.arange(56, 70) + np.array(WEEK * 2) - np.mean(WEEK)
    assert np.max(np.abs(result.mean - truth) / truth) < 0.01
    assert result.model == "holt_winters"
    assert all(b >= a for a, b in zip(result.sd, result.sd[1:]))  # uncertainty never shrinks ahead


def test_backtest_mape_and_coverage_by_hand():
    # weeks 1-2 the same, week 3 10% higher: seasonal naive forecasts week 2, each error 0.1 / 1.1
    y = np.array(WEEK * 2 + [v * 1.1 for v in WEEK])
    result = backtest(y, "seasonal_naive", 7)
    assert result["mape"] == pytest.approx(0.1 / 1.1)
    assert result["coverage_80"] == 0.0 and result["coverage_95"] == 0.0  # zero residuals: no width
    assert backtest(y[:20], "seasonal_naive", 7) is None  # 13 days left to fit: fewer than two weeks


def test_daily_series_drops_the_newest_day_and_fills_gaps_with_zero():
    d = datetime(2025, 1, 1, tzinfo=timezone.utc)
    through, series = daily_series(_hourly([
        (d + timedelta(hours=1), "to_roman", 10), (d + timedelta(hours=2), "to_roman", 30),
        (d + timedelta(days=2, hours=5), "to_roman", 7),  # 2 January has no row
        (d + timedelta(days=3, hours=0), "to_roman", 99),  # the newest day: still filling
    ]))
    assert through == date(2025, 1, 3)
    assert list(series[("to_roman", "daily_requests")]) == [40, 0, 7]
    assert list(series[("to_roman", "peak_hour_requests")]) == [30, 0, 7]


def test_lead_in_days_are_trimmed():
    assert list(trim_lead_in(np.array([1.0, 2.0, 100.0, 90.0, 3.0, 110.0]))) == [100.0, 90.0, 3.0, 110.0]


def test_capacity_tables_pick_the_better_model_and_are_deterministic():
    first = date(2025, 1, 6)
    flat = WEEK * 6  # a season that repeats exactly: seasonal naive is perfect (MAPE 0) and wins ties
    t = np.arange(42)
    growing = list(np.round(3000 + 60 * t + 4 * np.array(WEEK * 6)))  # a strong trend: the naive lags
    rows = _series_hours(flat, first, "to_roman") + _series_hours(growing, first, "from_roman")
    rows += [(datetime(2025, 2, 17, 1, tzinfo=timezone.utc), d, 1) for d in ("to_roman", "from_roman")]  # newest
    hourly = _hourly(rows)
    predicted, accuracy = capacity_tables(hourly)
    again = capacity_tables(hourly)
    assert predicted.equals(again[0]) and accuracy.equals(again[1])

    assert predicted.num_rows == 2 * 2 * forecast.HORIZON_DAYS
    models = {(r["direction"], r["metric"]): r["model"] for r in predicted.to_pylist()}
    assert models[("to_roman", "daily_requests")] == "seasonal_naive"
    assert models[("from_roman", "daily_requests")] == "holt_winters"
    naive = [r for r in predicted.to_pylist() if r["direction"] == "to_roman" and r["metric"] == "daily_requests"]
    assert [r["forecast"] for r in naive[:7]] == WEEK  # 17 Feb is a Monday, like 6 Jan
    assert naive[0]["forecast_date"] == date(2025, 2, 17) and naive[0]["history_through"] == date(2025, 2, 16)
    assert [r["horizon_days"] for r in naive] == list(range(1, 15))
    for r in predicted.to_pylist():
        assert 0 <= r["lower_95"] <= r["lower_80"] <= r["forecast"] <= r["upper_80"] <= r["upper_95"]

    scored = {(r["direction"], r["metric"], r["model"]): r for r in accuracy.to_pylist()}
    assert len(scored) == 8 and all(r["holdout_days"] == 14 for r in scored.values())
    assert scored[("to_roman", "daily_requests", "seasonal_naive")]["mape"] == 0.0
    growth = [scored[("from_roman", "daily_requests", m)]["mape"] for m in ("holt_winters", "seasonal_naive")]
    assert growth[0] < growth[1]
    # the naive's holdout error by hand: each day is forecast as one or two weeks earlier, 420 or 840 less
    y = np.array(growing)
    expected = np.mean(np.abs(y[28:] - np.concatenate([y[21:28], y[21:28]])) / y[28:])
    assert growth[1] == pytest.approx(expected)


def test_short_history_still_forecasts_with_the_unmeasured_default():
    first = date(2025, 1, 6)
    rows = _series_hours([100.0, 110.0, 120.0, 130.0], first) + [(datetime(2025, 1, 10, 1, tzinfo=timezone.utc), "to_roman", 1)]
    predicted, accuracy = capacity_tables(_hourly(rows))
    assert accuracy.num_rows == 0  # too short to hold anything out
    daily = [r for r in predicted.to_pylist() if r["metric"] == "daily_requests"]
    assert {r["model"] for r in daily} == {"seasonal_naive"}
    assert daily[0]["forecast"] == 130.0  # no season yet: the last day


def test_no_complete_day_gives_empty_tables():
    predicted, accuracy = capacity_tables(_hourly([(datetime(2025, 1, 6, 1, tzinfo=timezone.utc), "to_roman", 5)]))
    assert predicted.num_rows == 0 and accuracy.num_rows == 0
    assert predicted.schema == forecast.FORECAST_SCHEMA
