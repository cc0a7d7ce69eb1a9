"""Gold tables as pure functions of silver DataFrames. No I/O.

Each function computes its table for the keys present in its input, so the same function serves a
full build (all facts) and an incremental one (the facts of the touched days or users).

Requests are counted as rows (every silver fact is one request), so the facts never need event_id:
a column of random UUIDs that costs more to read than any other.

Percentiles everywhere use the nearest-rank definition: for the n values of a group sorted
ascending, P(p) is the value at 1-based rank ceil(p / 100 * n). It is exact, needs no
interpolation, and always returns a latency that was actually observed.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import daft
import pyarrow as pa
import pyarrow.compute as pc
from daft import DataFrame, DataType, col, lit

from tasks.transforms.silver import spread

PERCENTILES = (50, 95, 99)


def nearest_rank(values: list[float], p: float) -> float | None:
    """P(p) by nearest rank; None for an empty group."""
    clean = sorted(v for v in values if v is not None)
    if not clean:
        return None
    rank = max(1, math.ceil(p / 100 * len(clean)))
    return clean[rank - 1]


def nearest_ranks(lists: pa.Array, percentiles: tuple[float, ...]) -> list[pa.Array]:
    """:func:`nearest_rank` of every list, for each percentile: one Arrow array per percentile.

    Vectorized, because a Python sort per group cost most of a full build: all values are sorted
    once by (list, value) with nulls last, so each list's values keep its own offsets range and
    its non-null values come first in it."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0).cast(pa.int64())  # a null list is empty
    ends = pc.cumulative_sum(lengths)
    starts = pc.subtract(ends, lengths)
    values = pc.list_flatten(lists).cast(pa.float64())
    ordered = pa.table({"list": pc.list_parent_indices(lists), "value": values}).sort_by(
        [("list", "ascending", "at_end"), ("value", "ascending", "at_end")])
    ranked = ordered.column("value").combine_chunks()
    valid_before = pa.concat_arrays(  # non-null values before each position
        [pa.array([0], pa.int64()), pc.cumulative_sum(pc.is_valid(values).cast(pa.int64()))])
    counts = pc.subtract(valid_before.take(ends), valid_before.take(starts))
    out = []
    for p in percentiles:
        # the same float arithmetic as nearest_rank: ceil(p / 100 * n), at least 1
        rank = pc.max_element_wise(pc.ceil(pc.multiply(counts.cast(pa.float64()), p / 100)).cast(pa.int64()), 1)
        at = pc.if_else(pc.equal(counts, 0), pa.scalar(None, pa.int64()), pc.subtract(pc.add(starts, rank), 1))
        out.append(ranked.take(at))
    return out


def _percentiles_udf(percentiles: tuple[int, ...]):
    """One batch UDF per set of percentiles: a struct of p<n> fields from one sort of the lists."""

    @daft.func.batch(return_dtype=DataType.struct({f"p{p}": DataType.float64() for p in percentiles}))
    def percentiles_of(lists: daft.Series) -> pa.Array:
        arrays = nearest_ranks(lists.to_arrow(), percentiles)
        return pa.StructArray.from_arrays(arrays, names=[f"p{p}" for p in percentiles])

    return percentiles_of


_DAILY_PERCENTILES = _percentiles_udf(PERCENTILES)
_HOURLY_PERCENTILES = _percentiles_udf((95,))


def dim_date(first: date, last: date) -> DataFrame:
    """One row per calendar date from ``first`` to ``last``."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)] if first <= last else []
    iso = [d.isocalendar() for d in days]
    return daft.from_pydict(
        {
            "date": pa.array(days, pa.date32()),
            "year": pa.array([d.year for d in days], pa.int32()),
            "quarter": pa.array([(d.month - 1) // 3 + 1 for d in days], pa.int32()),
            "month": pa.array([d.month for d in days], pa.int32()),
            "day": pa.array([d.day for d in days], pa.int32()),
            "iso_week": pa.array([w.week for w in iso], pa.int32()),
            "day_of_week": pa.array([w.weekday for w in iso], pa.int32()),  # 1 = Monday
            "is_weekend": pa.array([w.weekday >= 6 for w in iso], pa.bool_()),
        }
    )


def daily_conversion_metrics(facts: DataFrame, partitions: int = 1) -> DataFrame:
    """(event_date, direction): volume, success rate, users, latency percentiles.

    ``partitions`` > 1: the groups are aggregated in that many partitions hashed by their keys
    (``silver.spread``), so Ray spreads them over the cluster; the rows are the same."""
    grouped = spread(facts, partitions, "event_date", "direction").groupby("event_date", "direction").agg(
        col("direction").count("all").alias("requests"),
        col("success").cast(DataType.int64()).sum().alias("successes"),
        col("user_id").count_distinct().alias("unique_users"),
        col("user_id").is_null().cast(DataType.int64()).sum().alias("anonymous_requests"),
        col("latency_ms").mean().alias("avg_latency_ms"),
        col("latency_ms").list_agg().alias("latencies"),
    )
    return grouped.with_column("percentiles", _DAILY_PERCENTILES(col("latencies"))).select(
        "event_date",
        "direction",
        col("requests").cast(DataType.int64()),
        col("successes").cast(DataType.int64()),
        (col("requests") - col("successes")).cast(DataType.int64()).alias("failures"),
        (col("successes").cast(DataType.float64()) / col("requests").cast(DataType.float64())).alias("success_rate"),
        col("unique_users").cast(DataType.int64()),
        col("anonymous_requests").cast(DataType.int64()),
        "avg_latency_ms",
        *[col("percentiles")[f"p{p}"].alias(f"p{p}_latency_ms") for p in PERCENTILES],
    )


def plan_at_event(facts: DataFrame, users: DataFrame) -> DataFrame:
    """Each fact with the plan in force at occurred_at, by a point-in-time join to dim_users
    (valid_from <= occurred_at < valid_to); anonymous calls get 'anonymous'."""
    versions = users.select(
        col("user_id").alias("dim_user_id"),
        col("user_plan").alias("plan_in_force"),
        "valid_from",
        "valid_to",
    )
    known = facts.where(col("user_id").not_null())
    matched = (
        known.join(versions, left_on="user_id", right_on="dim_user_id", how="inner")
        .where(
            (col("valid_from") <= col("occurred_at"))
            & (col("valid_to").is_null() | (col("occurred_at") < col("valid_to")))
        )
        .exclude("dim_user_id", "valid_from", "valid_to", "user_plan")
        .with_column_renamed("plan_in_force", "user_plan")
    )
    anonymous = facts.where(col("user_id").is_null()).with_column("user_plan", lit("anonymous"))
    return matched.concat(anonymous.select(*matched.column_names))


def daily_plan_metrics(facts: DataFrame, users: DataFrame, partitions: int = 1) -> DataFrame:
    """(event_date, user_plan) with the plan in force when each call happened."""
    known = spread(facts.select("event_date", "occurred_at", "user_id", "user_plan", "success"), partitions, "user_id")
    planned = spread(plan_at_event(known, users), partitions, "event_date", "user_plan")
    return planned.groupby("event_date", "user_plan").agg(
        col("user_plan").count("all").cast(DataType.int64()).alias("requests"),
        col("success").cast(DataType.int64()).sum().cast(DataType.int64()).alias("successes"),
        col("user_id").count_distinct().cast(DataType.int64()).alias("unique_users"),
    )


def user_daily_activity(facts: DataFrame, partitions: int = 1) -> DataFrame:
    """(user_id, event_date): one known user's activity on one day.

    Every column of the user summary except the current plan and country is a sum, min, max or
    row count of these rows, so a late event rebuilds one day of this table and the summary of
    the touched users is then aggregated from it (at most one row per user and day) instead of
    from all their facts."""
    known = spread(facts.where(col("user_id").not_null()), partitions, "user_id", "event_date")
    daily = known.groupby("user_id", "event_date").agg(
        col("occurred_at").min().alias("first_seen_at"),
        col("occurred_at").max().alias("last_seen_at"),
        col("user_id").count("all").cast(DataType.int64()).alias("requests"),
        col("success").cast(DataType.int64()).sum().cast(DataType.int64()).alias("successes"),
        (col("direction") == "to_roman").cast(DataType.int64()).sum().cast(DataType.int64()).alias("to_roman_requests"),
        (col("direction") == "from_roman").cast(DataType.int64()).sum().cast(DataType.int64()).alias("from_roman_requests"),
    )
    return daily.select(
        "user_id", "event_date", "first_seen_at", "last_seen_at", "requests", "successes",
        (col("requests") - col("successes")).cast(DataType.int64()).alias("failures"),
        "to_roman_requests", "from_roman_requests",
    )


def user_summary_from_daily(daily: DataFrame, users: DataFrame, partitions: int = 1) -> DataFrame:
    """The user summary from :func:`user_daily_activity` rows: one row per user, over every day
    of theirs present in ``daily``, with their current plan and country."""
    activity = spread(daily, partitions, "user_id").groupby("user_id").agg(
        col("first_seen_at").min(),
        col("last_seen_at").max(),
        col("requests").sum().cast(DataType.int64()),
        col("successes").sum().cast(DataType.int64()),
        col("event_date").count().cast(DataType.int64()).alias("active_days"),
        col("to_roman_requests").sum().cast(DataType.int64()),
        col("from_roman_requests").sum().cast(DataType.int64()),
    )
    current = users.where(col("is_current")).select(
        col("user_id").alias("current_user_id"),
        col("user_plan").alias("current_plan"),
        col("user_country").alias("current_country"),
    )
    return (
        activity.join(current, left_on="user_id", right_on="current_user_id", how="left")
        .with_column("failures", (col("requests") - col("successes")).cast(DataType.int64()))
        .select(
            "user_id", "first_seen_at", "last_seen_at", "requests", "successes", "failures", "active_days",
            "to_roman_requests", "from_roman_requests", "current_plan", "current_country",
        )
    )


def user_activity_summary(facts: DataFrame, users: DataFrame, partitions: int = 1) -> DataFrame:
    """One row per known user over all their facts, with their current plan and country."""
    return user_summary_from_daily(user_daily_activity(facts, partitions), users, partitions)


def hourly_api_usage(facts: DataFrame, partitions: int = 1) -> DataFrame:
    """(event_hour, endpoint, http_status): load and latency per hour."""
    hourly = spread(facts.with_column("event_hour", col("occurred_at").date_trunc("1 hour")), partitions,
                    "event_hour", "endpoint", "http_status")
    grouped = hourly.groupby("event_hour", "endpoint", "http_status").agg(
        col("endpoint").count("all").cast(DataType.int64()).alias("requests"),
        col("latency_ms").mean().alias("avg_latency_ms"),
        col("latency_ms").list_agg().alias("latencies"),
        col("event_date").any_value().alias("event_date"),
    )
    return grouped.select(
        "event_hour", "endpoint", "http_status", "requests", "avg_latency_ms",
        _HOURLY_PERCENTILES(col("latencies"))["p95"].alias("p95_latency_ms"), "event_date",
    )
