"""Which silver (or gold) columns each derived column is computed from: the column-lineage facet.
Kept beside the transforms' contract rather than inferred, so a reviewer sees it in one place."""

from __future__ import annotations

FACTS = "silver.fact_conversions"
USERS = "silver.dim_users"
USER_DAILY = "gold.user_daily_activity"
BRONZE = "bronze.conversion_events_raw"

# output table -> output column -> (input table, input column), aggregate or identity
COLUMN_SOURCES: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "gold.daily_conversion_metrics": {
        "event_date": ((FACTS, "event_date"),), "direction": ((FACTS, "direction"),),
        "requests": ((FACTS, "event_id"),), "successes": ((FACTS, "success"),), "failures": ((FACTS, "success"),),
        "success_rate": ((FACTS, "success"),), "unique_users": ((FACTS, "user_id"),),
        "anonymous_requests": ((FACTS, "user_id"),), "avg_latency_ms": ((FACTS, "latency_ms"),),
        "p50_latency_ms": ((FACTS, "latency_ms"),), "p95_latency_ms": ((FACTS, "latency_ms"),),
        "p99_latency_ms": ((FACTS, "latency_ms"),),
    },
    "gold.daily_plan_metrics": {
        "event_date": ((FACTS, "event_date"),), "user_plan": ((FACTS, "user_plan"),),
        "requests": ((FACTS, "event_id"),), "successes": ((FACTS, "success"),), "unique_users": ((FACTS, "user_id"),),
    },
    "gold.user_daily_activity": {
        "user_id": ((FACTS, "user_id"),), "event_date": ((FACTS, "event_date"),),
        "first_seen_at": ((FACTS, "occurred_at"),), "last_seen_at": ((FACTS, "occurred_at"),),
        "requests": ((FACTS, "event_id"),), "successes": ((FACTS, "success"),), "failures": ((FACTS, "success"),),
        "to_roman_requests": ((FACTS, "direction"),), "from_roman_requests": ((FACTS, "direction"),),
    },
    "gold.user_activity_summary": {
        "user_id": ((USER_DAILY, "user_id"),), "first_seen_at": ((USER_DAILY, "first_seen_at"),),
        "last_seen_at": ((USER_DAILY, "last_seen_at"),), "requests": ((USER_DAILY, "requests"),),
        "successes": ((USER_DAILY, "successes"),), "failures": ((USER_DAILY, "failures"),),
        "active_days": ((USER_DAILY, "event_date"),), "to_roman_requests": ((USER_DAILY, "to_roman_requests"),),
        "from_roman_requests": ((USER_DAILY, "from_roman_requests"),),
        "current_plan": ((USERS, "user_plan"), (USERS, "is_current")),
        "current_country": ((USERS, "user_country"), (USERS, "is_current")),
    },
    "gold.hourly_api_usage": {
        "event_hour": ((FACTS, "occurred_at"),), "endpoint": ((FACTS, "endpoint"),),
        "http_status": ((FACTS, "http_status"),), "requests": ((FACTS, "event_id"),),
        "avg_latency_ms": ((FACTS, "latency_ms"),), "p95_latency_ms": ((FACTS, "latency_ms"),),
        "event_date": ((FACTS, "event_date"),),
    },
    "gold.dim_date": {
        column: ((FACTS, "event_date"),)
        for column in ("date", "year", "quarter", "month", "day", "iso_week", "day_of_week", "is_weekend")
    },
    FACTS: {
        "source_topic": ((BRONZE, "topic"),), "source_partition": ((BRONZE, "partition"),),
        "source_offset": ((BRONZE, "offset"),), "kafka_timestamp": ((BRONZE, "kafka_timestamp"),),
        **{column: ((BRONZE, "value"),) for column in (
            "event_id", "event_type", "schema_version", "occurred_at", "event_date", "user_id", "user_plan",
            "user_country", "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint",
            "http_status", "client", "numeral_value", "region", "cache_hit")},
    },
}
