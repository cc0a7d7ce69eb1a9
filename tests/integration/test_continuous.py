"""Continuous mode on a private stack-profile lakehouse: bursts of known events through the
long-running ingest and the warm, coalesced promotions, and gold checked against plain Python.

Its own REST catalog, buckets and topic (``private_stack``), the stack's Kafka, Ray head and
Prefect server; ``continuous_flow`` runs in a thread of this process as `lakehouse
serve-continuous` runs it. Bursts arrive about as fast as a promotion takes, so bronze commits
land during promotions and are served by the next one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Producer

from tasks.catalog import open_catalog
from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, GOLD_USER_ACTIVITY_SUMMARY
from tests.integration.private_lakehouse import make_event

pytestmark = pytest.mark.stack

BURSTS, PER_BURST, USERS = 8, 150, 40
OCCURRED = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)  # all in the past


def _bronze_records(settings) -> int:
    try:
        table = open_catalog(settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    except Exception:  # noqa: BLE001 - not created before the first commit
        return 0
    snapshot = table.current_snapshot()
    return int(snapshot.summary.additional_properties.get("total-records", 0)) if snapshot else 0


def _send_bursts(settings) -> dict[str, dict[str, int]]:
    """Every burst's events (a few sent twice, one record malformed) and the truth per user. The
    rest follow once the first burst is in bronze: they meet a running loop, however slowly it
    started on this machine."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    seen: set[str] = set()
    truth: dict[str, dict[str, int]] = defaultdict(lambda: {"requests": 0, "to_roman_requests": 0,
                                                           "from_roman_requests": 0})
    n = 0
    for burst in range(BURSTS):
        for i in range(PER_BURST):
            n += 1
            user = f"cont-{n % USERS}"
            to_roman = n % 3 != 0
            extra = {} if to_roman else {"direction": "from_roman", "input": "IV", "output": "4",
                                          "endpoint": "/v1/from-roman"}
            event_id = str(uuid.UUID(int=n))
            value = make_event(n, occurred=OCCURRED + timedelta(seconds=n), user=user, **extra)
            producer.produce(settings.kafka_topic, value=value, key=user.encode(), partition=n % 3)
            if event_id not in seen:
                seen.add(event_id)
                row = truth[user]
                row["requests"] += 1
                row["to_roman_requests" if to_roman else "from_roman_requests"] += 1
            if i % 50 == 0:  # a resend of this event: silver keeps the first arrival only
                producer.produce(settings.kafka_topic, value=value, key=user.encode(), partition=(n + 1) % 3)
        producer.produce(settings.kafka_topic, value=b"{not json", partition=burst % 3)  # quarantined
        assert producer.flush(30) == 0
        if burst == 0:
            deadline = time.monotonic() + 120
            while _bronze_records(settings) < PER_BURST and time.monotonic() < deadline:
                time.sleep(0.5)
            assert _bronze_records(settings) >= PER_BURST, "the first burst never reached bronze"
        time.sleep(2.0)  # a commit or two per burst (1 s bound), promotions slower than that
    return {user: dict(row) for user, row in truth.items()}


def _gold_summary(settings) -> dict[str, dict[str, int]]:
    table = open_catalog(settings, "serving").load_table(GOLD_USER_ACTIVITY_SUMMARY.identifier)
    rows = table.scan(selected_fields=("user_id", "requests", "to_roman_requests", "from_roman_requests")).to_arrow()
    return {r.pop("user_id"): r for r in rows.to_pylist()}


def test_continuous_mode_lands_bursts_in_gold_exactly_with_coalesced_promotions(private_stack):
    from flows.continuous import continuous_flow, request_stop
    from tasks.verify import verify

    settings = private_stack.model_copy(update={"continuous_commit_seconds": 1.0,
                                                "continuous_safety_seconds": 30.0})
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(continuous_flow(settings=settings)), daemon=True)
    runner.start()
    try:
        truth = _send_bursts(settings)
        deadline, gold = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            try:
                gold = _gold_summary(settings)
            except Exception:  # noqa: BLE001 - the table does not exist before the first gold build
                gold = {}
            if gold == truth:
                break
            time.sleep(1.0)
    finally:
        request_stop()
        runner.join(timeout=180)
    assert not runner.is_alive(), "continuous_flow did not stop"
    assert gold == truth
    assert result["records"] == BURSTS * (PER_BURST + PER_BURST // 50 + 1)  # every record, once, in bronze
    assert result["batches"] >= 2, result  # the first burst alone, then at least one more commit
    assert result["failures"] == 0, result
    # Every commit was served by a promotion that began after it, and never one promotion per
    # commit queued up: how many commits share one depends on this machine's load (the sharing
    # itself is tests/unit/test_coalesce.py's).
    assert result["served"] == result["signals"] == result["batches"], result
    assert result["promotions"] - result["ticks"] <= result["batches"], result
    checked = verify(open_catalog(settings, "serving"), settings)
    assert checked.ok, checked.first_failure
