"""The whole path on the real stack: produce → Kafka → bronze → silver, through the REST catalog on S3."""

from __future__ import annotations

import uuid

import pyarrow.compute as pc
import pytest

from tasks.catalog import open_catalog
from tasks.kafka import ensure_topic
from tasks.simulator import TrafficProfile, produce
from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS

pytestmark = pytest.mark.stack


def test_produce_ingest_promote_accounts_for_every_record(stack_settings):
    from flows.ingest import ingest_flow
    from flows.silver import silver_flow

    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    settings = stack_settings.model_copy(update={"kafka_topic": topic})
    ensure_topic(settings, topic, partitions=3)
    sent = produce(settings, TrafficProfile(
        events=6000, seed=2024, duplicate_rate=0.05, late_rate=0.03, malformed_rate=0.02,
        wrong_conversion_rate=0.01, v2_share=0.3,
    ))
    while True:
        batch = ingest_flow(settings=settings, max_records=2500)
        if batch["lag_left"] == 0:
            break

    catalog = open_catalog(settings)
    bronze = catalog.load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    ours = bronze.scan(row_filter=f"topic == '{topic}'").to_arrow()
    assert ours.num_rows == sent.events

    report = silver_flow(settings=settings)
    assert report["facts"] + report["rejected"] + report["duplicates_dropped"] == report["bronze_records"]
    assert report["rejected"] >= sent.per_kind.get("malformed", 0) - 1  # an empty-but-valid JSON can't be
    assert "WRONG_CONVERSION" in report["reasons"]

    facts = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).scan().to_arrow()
    assert pc.count_distinct(facts.column("event_id")).as_py() == facts.num_rows
    mine = facts.filter(pc.equal(facts.column("source_topic"), topic))
    rejected = catalog.load_table(SILVER_CONVERSION_EVENTS_REJECTED.identifier).scan(
        row_filter=f"source_topic == '{topic}'").to_arrow()
    # every record of this topic is a fact, a quarantine row, or a duplicate of a fact
    assert mine.num_rows + rejected.num_rows <= sent.events
    assert sent.events - mine.num_rows - rejected.num_rows <= sent.per_kind.get("duplicate", 0)
    assert {"region", "cache_hit"} <= set(facts.column_names)

    again = silver_flow(settings=settings)
    assert again["committed"] == {} and again["bronze_records"] == 0
    after = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).scan().to_arrow()
    assert after.num_rows == facts.num_rows
