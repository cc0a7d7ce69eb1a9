"""Traffic from the simulated Roman Numeral Service, as a deployment (manual runs)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from prefect import flow, get_run_logger

from tasks.orchestration import publish_counts
from tasks.settings import Settings, load_settings
from tasks.simulator import TrafficProfile, choose_incidents, produce


@flow(name="produce-traffic", log_prints=False)
def produce_flow(
    events: int = 10_000,
    days: int = 3,
    seed: int = 42,
    rate: float = 0.0,
    duplicate_rate: float = 0.01,
    late_rate: float = 0.01,
    malformed_rate: float = 0.001,
    wrong_conversion_rate: float = 0.0005,
    v2_share: float = 0.3,
    trend: float = 0.0,
    seasonal: bool = False,
    random_incidents: int = 0,
    settings: Optional[Settings] = None,
) -> dict:
    """Send ``events`` records to the conversion topic; the same seed sends the same events.
    ``trend``, ``seasonal`` and ``random_incidents`` opt into known traffic shape and incidents
    (returned as ``truth``)."""
    settings = settings or load_settings()
    end = datetime.now(timezone.utc)
    profile = TrafficProfile(
        events=events, rate=rate, days=days, seed=seed, duplicate_rate=duplicate_rate, late_rate=late_rate,
        malformed_rate=malformed_rate, wrong_conversion_rate=wrong_conversion_rate, v2_share=v2_share,
        end=end, trend=trend, seasonal=seasonal, incidents=choose_incidents((), random_incidents, end, days, seed),
    )
    report = produce(settings, profile)
    get_run_logger().info("sent %d records to %s at %.0f/s", report.events, report.topic, report.rate)
    publish_counts("produce-traffic", {"records": report.events, "bytes": report.bytes, **report.per_kind,
                                       "records per second": round(report.rate)}, f"to {report.topic}")
    return {"events": report.events, "bytes": report.bytes, "per_kind": report.per_kind, "topic": report.topic,
            "truth": profile.truth()}
