"""gold.hourly_anomalies' pure functions: hourly metrics, the robust baseline, scores and flags."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta, timezone

import daft
import pyarrow as pa
import pytest

from tasks.data_science import days_filter
from tasks.transforms import anomalies
from tasks.transforms.anomalies import (
    baseline_hours,
    dependent_days,
    hourly_metrics,
    mad,
    median,
    score_hours,
)

MONDAY = datetime(2025, 1, 27, 14, tzinfo=timezone.utc)  # a Monday, 14:00 UTC
HOUR, DAY, WEEK = timedelta(hours=1), timedelta(days=1), timedelta(days=7)


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000


def _metrics(rows: list[tuple]) -> pa.Table:
    """(event_hour, direction, requests, error_rate, p95_latency_ms) rows as the scorer reads them."""
    hour, direction, requests, error_rate, p95 = zip(*rows)
    return pa.table({"event_hour": pa.array(hour, pa.timestamp("us", tz="UTC")), "direction": list(direction),
                     "requests": pa.array(requests, pa.int64()), "error_rate": pa.array(error_rate, pa.float64()),
                     "p95_latency_ms": pa.array(p95, pa.float64())})


def _row(table: pa.Table, hour: datetime, direction: str = "to_roman") -> dict:
    found = [r for r in table.to_pylist() if r["event_hour"] == hour and r["direction"] == direction]
    assert len(found) == 1
    return found[0]


def test_median_and_mad_by_hand():
    assert median([3, 1, 2]) == 2 and median([4, 1, 3, 2]) == 2.5
    assert mad([1, 2, 3, 4, 100]) == 1  # deviations from 3: 2 1 0 1 97
    assert mad([100, 110]) == 5


def test_hourly_metrics_counts_failures_and_takes_the_nearest_rank_p95():
    t = datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    facts = daft.from_pydict({
        "occurred_at": pa.array([t, t + timedelta(minutes=5), t + timedelta(minutes=59), t + HOUR, t],
                                pa.timestamp("us", tz="UTC")),
        "direction": ["to_roman", "to_roman", "to_roman", "to_roman", "from_roman"],
        "success": [True, False, None, True, True],
        "latency_ms": [1.0, 9.0, 5.0, 2.0, 3.0],
    })
    rows = {(r["event_hour"], r["direction"]): r for r in hourly_metrics(facts).to_arrow().to_pylist()}
    ten = rows[(t, "to_roman")]
    assert ten["requests"] == 3
    assert ten["error_rate"] == pytest.approx(2 / 3)  # a false and a null success
    assert ten["p95_latency_ms"] == 9.0  # rank ceil(0.95 * 3) = 3 of [1, 5, 9]
    assert rows[(t + HOUR, "to_roman")]["requests"] == 1
    assert rows[(t, "from_roman")]["error_rate"] == 0.0


def test_weekly_baseline_score_and_flags_by_hand():
    table = _metrics([
        (MONDAY - 2 * WEEK, "to_roman", 100, 0.04, 10.0),
        (MONDAY - WEEK, "to_roman", 110, 0.06, 12.0),
        (MONDAY, "to_roman", 400, 0.30, 20.0),
    ])
    row = _row(score_hours(table), MONDAY)
    assert row["baseline_weeks"] == 2
    # requests: median 105, MAD 5 -> 7.41; floors sqrt(105) = 10.25 and 10% of 105 = 10.5 -> 10.5
    assert row["requests_baseline"] == 105
    assert row["requests_score"] == pytest.approx((400 - 105) / 10.5)
    assert row["requests_anomaly"]
    # error rate: median 0.05, MAD 0.01 -> 0.014826; binomial sqrt(.05 * .95 / 400) = 0.0109 -> 0.014826
    assert row["error_rate_baseline"] == pytest.approx(0.05)
    assert row["error_rate_score"] == pytest.approx(0.25 / 0.014826)
    assert row["error_rate_anomaly"]
    # p95: median 11, MAD 1 -> 1.4826; floor 25% of 11 = 2.75 -> 2.75; score 3.27 < 3.5, and 20 < 2 x 11
    assert row["p95_latency_ms_baseline"] == 11
    assert row["p95_latency_ms_score"] == pytest.approx(9 / 2.75)
    assert not row["p95_latency_ms_anomaly"]
    assert row["is_anomaly"]


def test_a_high_score_without_a_material_effect_is_not_flagged():
    # error rate 0.02 -> 0.045 at 10,000 requests: binomial sd 0.0014 is below the 0.005 floor, so the
    # score is 0.025 / 0.005 = 5, past the threshold, but only +2.5 points
    table = _metrics([
        (MONDAY - 2 * WEEK, "to_roman", 10_000, 0.02, 5.0),
        (MONDAY - WEEK, "to_roman", 10_000, 0.02, 5.0),
        (MONDAY, "to_roman", 10_000, 0.045, 5.0),
    ])
    row = _row(score_hours(table), MONDAY)
    assert math.sqrt(0.02 * 0.98 / 10_000) < 0.005
    assert row["error_rate_score"] == pytest.approx(0.025 / 0.005)
    assert row["error_rate_score"] > anomalies.THRESHOLD and not row["error_rate_anomaly"]
    assert not row["is_anomaly"]


def test_a_drop_is_flagged_and_a_low_error_rate_is_not():
    table = _metrics([
        (MONDAY - 3 * WEEK, "from_roman", 200, 0.04, 5.0),
        (MONDAY - 2 * WEEK, "from_roman", 210, 0.05, 5.0),
        (MONDAY - WEEK, "from_roman", 190, 0.04, 5.0),
        (MONDAY, "from_roman", 60, 0.0, 5.0),
    ])
    row = _row(score_hours(table), MONDAY, "from_roman")
    assert row["baseline_weeks"] == 3
    # median 200, MAD 10 -> 14.826; floors sqrt(200) = 14.14 and 20 -> 20; score (60 - 200) / 20 = -7
    assert row["requests_score"] == pytest.approx(-7.0)
    assert row["requests_anomaly"]
    assert row["error_rate_score"] < 0 and not row["error_rate_anomaly"]


def _outage_week() -> list[tuple]:
    """from_roman at 12:00-16:00 of the three Mondays before MONDAY (40, 44, 36 calls at 14:00);
    on MONDAY itself calls at 13:00 and 15:00 only (to_roman at both, from_roman at 13:00): the
    day's span is 13:00-15:00 and from_roman has no call at 14:00."""
    rows = []
    for back, at_two in ((3, 40), (2, 44), (1, 36)):
        for h in (12, 13, 14, 15, 16):
            rows.append((MONDAY - back * WEEK + (h - 14) * HOUR, "from_roman", at_two if h == 14 else 30, 0.02, 8.0))
    rows += [(MONDAY - HOUR, "to_roman", 50, 0.0, 5.0), (MONDAY + HOUR, "to_roman", 50, 0.0, 5.0),
             (MONDAY - HOUR, "from_roman", 30, 0.0, 5.0)]
    return rows


def test_an_hour_without_calls_inside_the_day_is_an_outage_flagged_as_a_drop():
    scored = score_hours(_metrics(_outage_week()))
    outage = _row(scored, MONDAY, "from_roman")
    # baseline: median of 40, 44, 36 = 40, MAD 4 -> 5.93; floors sqrt(40) = 6.32 and 4 -> 6.32
    assert outage["requests"] == 0 and outage["baseline_weeks"] == 3
    assert outage["requests_baseline"] == 40
    assert outage["requests_score"] == pytest.approx(-40 / math.sqrt(40))
    assert outage["requests_score"] < 0 and outage["requests_anomaly"] and outage["is_anomaly"]
    # no calls: no error rate or p95 to score, whatever their history says
    for metric in ("error_rate", "p95_latency_ms"):
        assert outage[metric] is None and outage[f"{metric}_baseline"] is None
        assert outage[f"{metric}_score"] is None and not outage[f"{metric}_anomaly"]


def test_hours_outside_the_days_span_and_outages_without_history_get_no_row():
    scored = score_hours(_metrics(_outage_week()))
    today = [(r["event_hour"], r["direction"]) for r in scored.to_pylist() if r["event_hour"].date() == MONDAY.date()]
    # from_roman's 14:00 and 15:00 are inside the span (15:00 is to_roman's last call); its 12:00
    # and 16:00 have history too, but are before the day's first call and after its last.
    # to_roman's 14:00 is inside the span but has no history to score it against.
    assert sorted(today) == sorted([(MONDAY - HOUR, "to_roman"), (MONDAY + HOUR, "to_roman"),
                                    (MONDAY - HOUR, "from_roman"), (MONDAY, "from_roman"),
                                    (MONDAY + HOUR, "from_roman")])
    assert _row(scored, MONDAY + HOUR, "from_roman")["requests_baseline"] == 30


def test_an_outage_is_not_in_the_baseline_of_the_same_hour_next_week():
    rows = _outage_week() + [(MONDAY + WEEK, "from_roman", 41, 0.02, 8.0)]
    row = _row(score_hours(_metrics(rows)), MONDAY + WEEK, "from_roman")
    # the trailing weeks with calls: 36, 44, 40 (the outage's 0 left out) -> median 40, MAD 4,
    # scale sqrt(40); with the 0 it would be 4 weeks and a median of 38
    assert row["baseline_weeks"] == 3
    assert row["requests_baseline"] == 40
    assert row["requests_score"] == pytest.approx(1 / math.sqrt(40))
    assert not row["is_anomaly"]


def test_outage_rows_read_back_from_the_table_give_the_same_rows():
    """The incremental build reads untouched days' metrics back from gold.hourly_anomalies, outage
    rows (0 requests) included: they must be refilled, not taken for hours with calls."""
    scored = score_hours(_metrics(_outage_week() + [(MONDAY + WEEK, "from_roman", 41, 0.02, 8.0)]))
    assert 0 in scored.column("requests").to_pylist()
    assert _row(scored, MONDAY + WEEK, "from_roman")["baseline_weeks"] == 3
    again = score_hours(scored.select(["event_hour", "direction", "requests", "error_rate", "p95_latency_ms"]))
    assert again.to_pylist() == scored.to_pylist()


def test_short_history_falls_back_to_the_same_hour_of_days_of_the_same_kind():
    # Monday 14:00 with one week back only: the fallback reads the trailing weekdays' 14:00 and
    # skips the weekend's, however different
    rows = [(MONDAY - WEEK, "to_roman", 100, 0.04, 5.0)]
    rows += [(MONDAY - k * DAY, "to_roman", 1000, 0.04, 5.0) for k in (1, 2)]  # Sunday, Saturday
    rows += [(MONDAY - k * DAY, "to_roman", v, 0.04, 5.0) for k, v in ((3, 120), (4, 130), (5, 110))]  # Fri..Wed
    rows += [(MONDAY, "to_roman", 125, 0.04, 5.0)]
    row = _row(score_hours(_metrics(rows)), MONDAY)
    assert row["baseline_weeks"] == 0
    assert row["requests_baseline"] == 115  # median of Fri 120, Thu 130, Wed 110, last Monday 100
    assert not row["is_anomaly"]
    hours, weeks = baseline_hours(_us(MONDAY), {_us(MONDAY - k * DAY) for k in (1, 2, 3, 7)})
    assert weeks == 0 and sorted(hours) == [_us(MONDAY - 7 * DAY), _us(MONDAY - 3 * DAY)]


def test_no_history_means_no_baseline_and_no_flag():
    row = _row(score_hours(_metrics([(MONDAY, "to_roman", 5, 1.0, 900.0)])), MONDAY)
    assert row["baseline_weeks"] == 0
    assert row["requests_baseline"] is None and row["requests_score"] is None
    assert not row["requests_anomaly"] and not row["is_anomaly"]


def test_the_weekly_baseline_uses_at_most_the_trailing_weeks():
    present = {_us(MONDAY - k * WEEK) for k in range(1, 7)}
    hours, weeks = baseline_hours(_us(MONDAY), present)
    assert weeks == anomalies.TRAILING_WEEKS == 4
    assert sorted(hours) == sorted(_us(MONDAY - k * WEEK) for k in range(1, 5))


def _random_metrics(rng: random.Random, first: datetime, days: int) -> list[tuple]:
    rows = []
    for h in range(days * 24):
        for direction in ("to_roman", "from_roman"):
            if rng.random() < 0.03:
                continue  # a few hours without traffic
            rows.append((first + h * HOUR, direction, rng.randint(50, 500), rng.uniform(0, 0.1), rng.uniform(2, 9)))
    return rows


def test_changing_some_days_changes_only_their_dependent_days():
    """The incremental build rescans only dependent_days(touched): every other row of a full
    rescore must come out the same as before the change."""
    rng = random.Random(5)
    first = datetime(2025, 1, 1, tzinfo=timezone.utc)
    before = _random_metrics(rng, first, 60)
    touched = {date(2025, 1, 20), date(2025, 2, 3)}
    after = [r if r[0].date() not in touched else (r[0], r[1], r[2] * 3, min(1.0, r[3] * 4), r[4] * 5) for r in before]
    after.append((datetime(2025, 1, 20, 3, tzinfo=timezone.utc) + timedelta(minutes=0), "sideways", 1, 0.0, 1.0))
    old, new = score_hours(_metrics(before)).to_pylist(), score_hours(_metrics(after)).to_pylist()
    affected = dependent_days(touched)
    unaffected_old = [r for r in old if r["event_hour"].date() not in affected]
    unaffected_new = [r for r in new if r["event_hour"].date() not in affected and r["direction"] != "sideways"]
    assert unaffected_old == unaffected_new and unaffected_old
    # and scoring only the dependent days gives exactly the full rescore's rows for them
    partial = score_hours(_metrics(after), sorted(affected)).to_pylist()
    assert partial == [r for r in new if r["event_hour"].date() in affected]
    assert any(r["is_anomaly"] for r in partial)
    assert any(r["requests"] == 0 for r in partial)  # the hours without traffic, filled as outages


def test_dependent_days_by_hand():
    day = date(2025, 3, 1)
    expected = {day + timedelta(days=k) for k in range(0, 15)} | {day + timedelta(days=21), day + timedelta(days=28)}
    assert dependent_days([day]) == expected
    assert anomalies.history_start([day, date(2025, 3, 5)]) == date(2025, 2, 1)


def test_days_filter_joins_consecutive_days_into_ranges():
    text = repr(days_filter([date(2025, 1, 2), date(2025, 1, 1), date(2025, 1, 4)]))
    assert text.count("GreaterThanOrEqual") == 2 and text.count("LessThan(") == 2
    assert "2025-01-01" in text and "2025-01-03" in text and "2025-01-04" in text and "2025-01-05" in text
    assert "2025-01-02T" not in text  # 1 and 2 January are one range
    assert days_filter([]) is None


def test_quiet_hours_need_enough_calls_before_a_flag():
    # 12 calls: p95 is the slowest call; 10x on it scores high but is one call. 2 failures of 12 is
    # 16.7% against 0%, far beyond the binomial noise, but only 2 extra failures
    quiet = _metrics([
        (MONDAY - 2 * WEEK, "to_roman", 12, 0.0, 5.0),
        (MONDAY - WEEK, "to_roman", 12, 0.0, 5.0),
        (MONDAY, "to_roman", 12, 2 / 12, 50.0),
    ])
    row = _row(score_hours(quiet), MONDAY)
    assert row["p95_latency_ms_score"] == pytest.approx(45 / 1.25)  # floor: 25% of 5
    assert row["error_rate_score"] == pytest.approx((2 / 12) / math.sqrt(0.01 * 0.99 / 12))
    assert not row["p95_latency_ms_anomaly"] and not row["error_rate_anomaly"] and not row["is_anomaly"]
    # the same shares at 60 calls: 10 extra failures and a p95 above the two slowest calls
    busy = _metrics([(MONDAY - 2 * WEEK, "to_roman", 60, 0.0, 5.0), (MONDAY - WEEK, "to_roman", 60, 0.0, 5.0),
                     (MONDAY, "to_roman", 60, 2 / 12, 50.0)])
    row = _row(score_hours(busy), MONDAY)
    assert row["p95_latency_ms_anomaly"] and row["error_rate_anomaly"]
