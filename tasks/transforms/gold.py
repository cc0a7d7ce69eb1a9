"""Gold tables as pure functions of silver DataFrames. No I/O.

Each function computes its table for the keys present in its input, so the same function serves a
full build (all facts) and an incremental one (the facts of the touched days or users).

Percentiles everywhere use the nearest-rank definition: for the n values of a group sorted
ascending, P(p) is the value at 1-based rank ceil(p / 100 * n). It is exact, needs no
interpolation, and always returns a latency that was actually observed.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import daft
import pyarrow as pa
from daft import DataFrame, DataType, col, lit

PERCENTILES = (50, 95, 99)


def nearest_rank(values: list[float], p: float) -> float | None:
    """P(p) by nearest rank; None for an empty group."""
    clean = sorted(v for v in values if v is not None)
    if not clean:
        return None
    rank = max(1, math.ceil(p / 100 * len(clean)))
    return clean[rank - 1]


def _percentile_udf(p: float):
    @daft.func.batch(return_dtype=DataType.float64())
    def percentile(lists: daft.Series) -> pa.Array:
        return pa.array([nearest_rank(v or [], p) for v in lists.to_pylist()], pa.float64())

    return percentile


_P = {p: _percentile_udf(p) for p in PERCENTILES}


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


def daily_conversion_metrics(facts: DataFrame) -> DataFrame:
    """(event_date, direction): volume, success rate, users, latency percentiles."""
    grouped = facts.groupby("event_date", "direction").agg(
        col("event_id").count().alias("requests"),
        col("success").cast(DataType.int64()).sum().alias("successes"),
        col("user_id").count_distinct().alias("unique_users"),
        col("user_id").is_null().cast(DataType.int64()).sum().alias("anonymous_requests"),
        col("latency_ms").mean().alias("avg_latency_ms"),
        col("latency_ms").list_agg().alias("latencies"),
    )
    return grouped.select(
        "event_date",
        "direction",
        col("requests").cast(DataType.int64()),
        col("successes").cast(DataType.int64()),
        (col("requests") - col("successes")).cast(DataType.int64()).alias("failures"),
        (col("successes").cast(DataType.float64()) / col("requests").cast(DataType.float64())).alias("success_rate"),
        col("unique_users").cast(DataType.int64()),
        col("anonymous_requests").cast(DataType.int64()),
        "avg_latency_ms",
        *[_P[p](col("latencies")).alias(f"p{p}_latency_ms") for p in PERCENTILES],
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


def daily_plan_metrics(facts: DataFrame, users: DataFrame) -> DataFrame:
    """(event_date, user_plan) with the plan in force when each call happened."""
    planned = plan_at_event(facts.select("event_id", "event_date", "occurred_at", "user_id", "user_plan", "success"),
                            users)
    return planned.groupby("event_date", "user_plan").agg(
        col("event_id").count().cast(DataType.int64()).alias("requests"),
        col("success").cast(DataType.int64()).sum().cast(DataType.int64()).alias("successes"),
        col("user_id").count_distinct().cast(DataType.int64()).alias("unique_users"),
    )


def user_activity_summary(facts: DataFrame, users: DataFrame) -> DataFrame:
    """One row per known user over all their facts, with their current plan and country."""
    known = facts.where(col("user_id").not_null())
    activity = known.groupby("user_id").agg(
        col("occurred_at").min().alias("first_seen_at"),
        col("occurred_at").max().alias("last_seen_at"),
        col("event_id").count().cast(DataType.int64()).alias("requests"),
        col("success").cast(DataType.int64()).sum().cast(DataType.int64()).alias("successes"),
        col("event_date").count_distinct().cast(DataType.int64()).alias("active_days"),
        (col("direction") == "to_roman").cast(DataType.int64()).sum().cast(DataType.int64()).alias("to_roman_requests"),
        (col("direction") == "from_roman").cast(DataType.int64()).sum().cast(DataType.int64()).alias("from_roman_requests"),
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


def hourly_api_usage(facts: DataFrame) -> DataFrame:
    """(event_hour, endpoint, http_status): load and latency per hour."""
    hourly = facts.with_column("event_hour", col("occurred_at").date_trunc("1 hour"))
    grouped = hourly.groupby("event_hour", "endpoint", "http_status").agg(
        col("event_id").count().cast(DataType.int64()).alias("requests"),
        col("latency_ms").mean().alias("avg_latency_ms"),
        col("latency_ms").list_agg().alias("latencies"),
        col("event_date").any_value().alias("event_date"),
    )
    return grouped.select(
        "event_hour", "endpoint", "http_status", "requests", "avg_latency_ms",
        _P[95](col("latencies")).alias("p95_latency_ms"), "event_date",
    )
