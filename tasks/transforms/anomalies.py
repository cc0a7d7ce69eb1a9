"""gold.hourly_anomalies as pure functions: hourly metrics per direction, a robust baseline, a score.

The baseline of an hour is the median of the same hour of the week over the trailing
``TRAILING_WEEKS`` weeks, and its spread the MAD (scaled by 1.4826 to match a standard deviation
for normal data): one bad week moves neither. While fewer than ``MIN_WEEKS`` of those weeks exist,
it falls back to the same hour of the day on days of the same kind (weekday or weekend) over the
trailing ``FALLBACK_DAYS`` days (``baseline_weeks`` = 0). With fewer than ``MIN_POINTS`` of those
either, the hour has no baseline: no score, no flag.

The score is (value - baseline) / scale, where the scale is the MAD-based spread but never below the
metric's own sampling noise (a MAD over 2-4 points is often near zero by chance): Poisson noise for
requests, binomial noise for the error rate at this hour's volume, a relative floor for p95.
Requests are flagged both ways (a drop or a surge); the error rate and p95 only upwards. A flag
also needs a minimum effect (``MIN_EFFECT``) and enough calls to tell (``MIN_P95_CALLS``,
``MIN_EXCESS_FAILURES``), so noise in quiet hours is not paged.

An outage (an hour without a single call) has no fact row. Within a day's span of calls (its first
to its last hour with any call, either direction), a direction's hour without calls is an outage
row: 0 requests, scored against its baseline; no error rate or p95 (no calls: undefined, never
scored). Outage rows never enter a baseline (history is the hours that had calls: a zero there
would drag quiet hours' medians down and hide the next week's incidents), and an outage hour
without a baseline gets no row (nothing to score it against). Hours before a day's first call or
after its last are not filled: nothing tells an outage from "not yet". A row of 0 requests in the
input is such an outage row read back from the table: it is dropped and filled again.

Incremental builds: an hour's row depends on its own day and on the days its baseline reads, so a
touched day changes its own rows and those of the ``dependent_days`` after it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone

import daft
import pyarrow as pa
from daft import DataFrame, DataType, col

from tasks.transforms.gold import nearest_ranks

METRICS = ("requests", "error_rate", "p95_latency_ms")
TRAILING_WEEKS = 4
MIN_WEEKS = 2
FALLBACK_DAYS = 14
MIN_POINTS = 2
MAD_TO_SD = 1.4826
THRESHOLD = 3.5
"""|score| at or above which a metric may be flagged (requests both ways, the others upwards)."""
REQUESTS_RELATIVE_FLOOR = 0.10  # day-to-day wobble and trend that 2-4 weekly points under-measure
ERROR_RATE_FLOOR = 0.005
P95_RELATIVE_FLOOR = 0.25  # a p95 of ~100 calls moves ~20% hour to hour
MIN_EFFECT = {"requests": 0.3, "error_rate": 0.05, "p95_latency_ms": 2.0}
"""A flag also needs an effect worth waking someone for: requests off by 30% of the baseline, the
error rate up 5 points, p95 at twice the baseline. Quiet hours are noisy enough to score high on
changes nobody would act on."""
MIN_P95_CALLS = 40
"""Below this many calls the nearest-rank p95 is one of the two slowest calls: one slow call is no spike."""
MIN_EXCESS_FAILURES = 5
"""An error-rate flag needs this many failures above the baseline's share: 1 of 7 is not a burst."""

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
EPOCH = date(1970, 1, 1)

ANOMALY_COLUMNS = (
    "event_hour", "direction", "requests", "requests_baseline", "requests_score", "requests_anomaly",
    "error_rate", "error_rate_baseline", "error_rate_score", "error_rate_anomaly",
    "p95_latency_ms", "p95_latency_ms_baseline", "p95_latency_ms_score", "p95_latency_ms_anomaly",
    "is_anomaly", "baseline_weeks",
)


@daft.func.batch(return_dtype=DataType.float64())
def _p95(lists: daft.Series) -> pa.Array:
    return nearest_ranks(lists.to_arrow(), (95,))[0]


def hourly_metrics(facts: DataFrame) -> DataFrame:
    """(event_hour, direction): requests, error rate (failures / requests, a null success counts as
    a failure as in gold.daily_conversion_metrics) and nearest-rank p95 latency."""
    grouped = facts.with_column("event_hour", col("occurred_at").date_trunc("1 hour")).groupby(
        "event_hour", "direction").agg(
        col("direction").count("all").alias("requests"),
        col("success").cast(DataType.int64()).sum().alias("successes"),
        col("latency_ms").list_agg().alias("latencies"),
    )
    return grouped.select(
        "event_hour", "direction", col("requests").cast(DataType.int64()),
        ((col("requests") - col("successes").fill_null(0)).cast(DataType.float64())
         / col("requests").cast(DataType.float64())).alias("error_rate"),
        _p95(col("latencies")).alias("p95_latency_ms"),
    )


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def mad(values: list[float]) -> float:
    """Median absolute deviation from the median."""
    centre = median(values)
    return median([abs(v - centre) for v in values])


def scale_of(metric: str, history: list[float], requests: int) -> float:
    """The spread a score divides by: the MAD-based one, floored by the metric's sampling noise."""
    centre = median(history)
    spread = MAD_TO_SD * mad(history)
    if metric == "requests":
        return max(spread, math.sqrt(max(centre, 1.0)), REQUESTS_RELATIVE_FLOOR * centre)
    if metric == "error_rate":
        p = min(max(centre, 0.01), 0.99)
        return max(spread, math.sqrt(p * (1 - p) / max(requests, 1)), ERROR_RATE_FLOOR)
    return max(spread, P95_RELATIVE_FLOOR * centre, 0.05)


def is_flagged(metric: str, score: float | None, value: float | None, baseline: float | None,
               requests: int = 0) -> bool:
    """Score beyond THRESHOLD, an effect of at least MIN_EFFECT[metric], and enough calls to tell."""
    if score is None or value is None or baseline is None:
        return False
    if metric == "requests":
        return abs(score) >= THRESHOLD and abs(value - baseline) >= MIN_EFFECT[metric] * baseline
    if metric == "error_rate":
        return (score >= THRESHOLD and value - baseline >= MIN_EFFECT[metric]
                and (value - baseline) * requests >= MIN_EXCESS_FAILURES)
    return score >= THRESHOLD and value >= MIN_EFFECT[metric] * baseline and requests >= MIN_P95_CALLS


def _is_weekend(hour_us: int) -> bool:
    return (EPOCH + timedelta(days=hour_us // DAY_US)).weekday() >= 5


def baseline_hours(hour_us: int, present: set[int]) -> tuple[list[int], int]:
    """(the hours whose values form the baseline of ``hour_us``, baseline_weeks): the same hour of
    the trailing weeks when MIN_WEEKS of them are ``present``, else the fallback (weeks 0)."""
    weekly = [hour_us - k * 7 * DAY_US for k in range(1, TRAILING_WEEKS + 1)]
    weekly = [h for h in weekly if h in present]
    if len(weekly) >= MIN_WEEKS:
        return weekly, len(weekly)
    weekend = _is_weekend(hour_us)
    daily = [hour_us - k * DAY_US for k in range(1, FALLBACK_DAYS + 1)]
    daily = [h for h in daily if h in present and _is_weekend(h) == weekend]
    return (daily, 0) if len(daily) >= MIN_POINTS else ([], 0)


def day_spans(hours: Iterable[int]) -> dict[int, tuple[int, int]]:
    """{day number: (first hour, last hour)} of the hours with calls, in epoch microseconds."""
    spans: dict[int, tuple[int, int]] = {}
    for hour in hours:
        first, last = spans.get(hour // DAY_US, (hour, hour))
        spans[hour // DAY_US] = (min(first, hour), max(last, hour))
    return spans


def outage_hours(present: set[int], spans: dict[int, tuple[int, int]]) -> set[int]:
    """The hours of the day ``spans`` at which a direction with calls at ``present`` had none."""
    return {hour for first, last in spans.values() for hour in range(first, last + 1, HOUR_US)} - present


def score_hours(metrics: pa.Table, days: Iterable[date] | None = None) -> pa.Table:
    """gold.hourly_anomalies rows for the hours of ``days`` (every hour when None), scored against
    the other rows of ``metrics`` (columns event_hour, direction, requests, error_rate,
    p95_latency_ms; it must hold the baseline days of those hours too), outage hours included."""
    hours = metrics.column("event_hour").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    directions = metrics.column("direction").to_pylist()
    values = {m: metrics.column(m).to_pylist() for m in METRICS}
    called = [i for i, requests in enumerate(values["requests"]) if requests]  # 0: a stored outage row
    by_direction: dict[str, dict[int, int]] = {}
    for i in called:
        by_direction.setdefault(directions[i], {})[hours[i]] = i
    spans = day_spans(hours[i] for i in called)
    wanted = None if days is None else {(d - EPOCH).days for d in days}
    rows = {name: [] for name in ANOMALY_COLUMNS}
    for direction in sorted(d for d in by_direction if d is not None):
        index = by_direction[direction]
        present = set(index)
        for hour in sorted(present | outage_hours(present, spans)):
            if wanted is not None and hour // DAY_US not in wanted:
                continue
            i = index.get(hour)
            base, weeks = baseline_hours(hour, present)
            if i is None and not base:
                continue  # an outage with nothing to score it against
            requests = values["requests"][i] if i is not None else 0
            rows["event_hour"].append(hour)
            rows["direction"].append(direction)
            rows["baseline_weeks"].append(weeks)
            flagged = False
            for metric in METRICS:
                value = values[metric][i] if i is not None else (0 if metric == "requests" else None)
                history = [values[metric][index[h]] for h in base]
                history = [v for v in history if v is not None]
                baseline = score = None
                if value is not None and len(history) >= MIN_POINTS:
                    baseline = median(history)
                    score = (value - baseline) / scale_of(metric, history, requests)
                anomaly = is_flagged(metric, score, value, baseline, requests)
                flagged = flagged or anomaly
                rows[metric].append(value)
                rows[f"{metric}_baseline"].append(baseline)
                rows[f"{metric}_score"].append(score)
                rows[f"{metric}_anomaly"].append(anomaly)
            rows["is_anomaly"].append(flagged)
    types = {"event_hour": pa.timestamp("us", tz="UTC"), "direction": pa.string(), "requests": pa.int64(),
             "baseline_weeks": pa.int32()}
    for metric in METRICS:
        types.setdefault(metric, pa.float64())
        types[f"{metric}_baseline"] = pa.float64()
        types[f"{metric}_score"] = pa.float64()
        types[f"{metric}_anomaly"] = pa.bool_()
    types["is_anomaly"] = pa.bool_()
    return pa.table({name: pa.array(rows[name], types[name]) for name in ANOMALY_COLUMNS})


def dependent_days(touched: Iterable[date]) -> set[date]:
    """The days whose rows change when ``touched`` days change: themselves, and the later days
    whose baselines read them (same weekday of the trailing weeks, or the fallback days)."""
    out = set()
    for day in touched:
        out.add(day)
        out.update(day + timedelta(days=k) for k in range(1, FALLBACK_DAYS + 1))
        out.update(day + timedelta(days=7 * k) for k in range(1, TRAILING_WEEKS + 1))
    return out


def history_start(days: Iterable[date]) -> date:
    """The first day whose metrics a score of ``days`` may read."""
    return min(days) - timedelta(days=max(FALLBACK_DAYS, 7 * TRAILING_WEEKS))


def day_of(hour: datetime) -> date:
    return hour.astimezone(timezone.utc).date()
