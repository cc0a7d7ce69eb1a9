"""The whole path on the real services: producer → Kafka → bronze → silver → gold on SeaweedFS,
with the stack's Prefect and Ray, checked against a plain-Python computation over what was sent.

It uses its own SQLite catalog and its own buckets, so other tests' data never mixes into the
gold it checks; the REST catalog has its own contract and integration tests.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import pyarrow.compute as pc
import pytest

from tasks.catalog import open_catalog
from tasks.simulator import TrafficProfile, generate, produce
from tasks.tables import (
    BRONZE_CONVERSION_EVENTS_RAW,
    GOLD_DAILY_CONVERSION_METRICS,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_FACT_CONVERSIONS,
)

from tests.integration.private_lakehouse import s3_lake

pytestmark = pytest.mark.stack


@pytest.fixture
def e2e_settings(stack_settings, tmp_path):
    return s3_lake(stack_settings, tmp_path, "e2e", f"e2e-{uuid.uuid4().hex[:8]}")


def expected_rejects(profile: TrafficProfile) -> int:
    """Malformed and wrong records, and resends of wrong ones, from the producer's own records."""
    wrong, count = set(), 0
    for record in generate(profile):
        if record.kind == "wrong_conversion":
            wrong.add(record.value)
        if record.kind in ("malformed", "wrong_conversion") or (record.kind == "duplicate" and record.value in wrong):
            count += 1
    return count


def expected_daily(profile: TrafficProfile) -> dict[tuple, tuple[int, int]]:
    """(event_date, direction) -> (requests, successes), from the producer's own records: every
    distinct valid event (resends come later and never add one)."""
    seen, out = set(), defaultdict(lambda: [0, 0])
    for record in generate(profile):
        if record.kind not in ("valid", "late"):
            continue
        event = json.loads(record.value)
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        day = datetime.fromisoformat(event["occurred_at"]).astimezone(timezone.utc).date()
        out[(day, event["direction"])][0] += 1
        out[(day, event["direction"])][1] += int(event["success"])
    return {k: tuple(v) for k, v in out.items()}


def test_produce_ingest_promote_build_accounts_for_every_record(e2e_settings):
    from flows.gold import gold_flow
    from flows.ingest import ingest_flow
    from flows.silver import silver_flow

    settings = e2e_settings
    profile = TrafficProfile(events=6000, seed=2024, duplicate_rate=0.05, late_rate=0.03, malformed_rate=0.02,
                             wrong_conversion_rate=0.01, v2_share=0.3, end=datetime.now(timezone.utc))
    sent = produce(settings, profile)
    ingested = ingest_flow(settings=settings, max_records=2500, max_batches=10)
    assert ingested["total_records"] == sent.events and ingested["lag_left"] == 0

    catalog = open_catalog(settings, "serving")
    assert catalog.load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier).scan().to_arrow().num_rows == sent.events

    report = silver_flow(settings=settings)
    assert report["bronze_records"] == sent.events
    assert report["facts"] + report["rejected"] + report["duplicates_dropped"] == sent.events
    assert report["rejected"] == expected_rejects(profile)
    assert "WRONG_CONVERSION" in report["reasons"]
    facts = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).scan().to_arrow()
    assert pc.count_distinct(facts.column("event_id")).as_py() == facts.num_rows == report["facts"]
    assert {"region", "cache_hit"} <= set(facts.column_names)
    rejected = catalog.load_table(SILVER_CONVERSION_EVENTS_REJECTED.identifier).scan().to_arrow()
    assert rejected.num_rows == report["rejected"]

    built = gold_flow(settings=settings)
    assert built["committed"]
    gold = catalog.load_table(GOLD_DAILY_CONVERSION_METRICS.identifier).scan().to_arrow().to_pylist()
    got = {(r["event_date"], r["direction"]): (r["requests"], r["successes"]) for r in gold}
    assert got == expected_daily(profile)

    # a second pass over everything changes nothing and commits nothing
    assert silver_flow(settings=settings)["committed"] == {}
    assert gold_flow(settings=settings)["committed"] == {}
    assert catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).scan().to_arrow().num_rows == facts.num_rows

    from tasks.verify import verify

    reconciled = verify(open_catalog(settings, "serving"), settings)
    assert reconciled.ok, reconciled.first_failure
    accounted = reconciled.check("silver.records_accounted")
    assert accounted.ok and not accounted.warning, accounted.detail
