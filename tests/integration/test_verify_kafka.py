"""`lakehouse verify` with the Kafka cross-check, against the real broker: a transactional
producer's commit markers and aborted transactions leave offset gaps in bronze that tables alone
can't tell from lost records; Kafka can. A private lakehouse (SQLite catalog, file warehouse) is
fed by the real ingest flow from a fresh topic."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from pyiceberg.expressions import And, EqualTo

from tasks.catalog import open_catalog
from tasks.kafka import ensure_topic
from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW
from tasks.verify import KafkaGapProbe, render_table, verify
from tests.integration.private_lakehouse import make_event

pytestmark = pytest.mark.stack

# (records per partition, commit?) per transaction. Offsets, with a marker after each transaction:
#   p0: 0-4 committed, 5 marker, 6-9 aborted, 10 marker, 11-15 committed, 16 marker, 17-18 aborted, 19 marker
#   p1: 0-2 committed, 3 marker, 4-5 aborted, 6 marker, 7-8 committed, 9 marker
TRANSACTIONS = [({0: 5, 1: 3}, True), ({0: 4, 1: 2}, False), ({0: 5, 1: 2}, True), ({0: 2}, False)]
COMMITTED = {0: [0, 1, 2, 3, 4, 11, 12, 13, 14, 15], 1: [0, 1, 2, 7, 8]}
HIGH = {0: 20, 1: 10}


@pytest.fixture
def transactional_lake(private, stack_settings):
    """The private lakehouse's settings on a fresh topic of 2 partitions, holding TRANSACTIONS."""
    topic = f"it-verify-{uuid.uuid4().hex[:8]}"
    settings = private.model_copy(update={"kafka_topic": topic, "kafka_bootstrap": stack_settings.kafka_bootstrap})
    ensure_topic(settings, topic, partitions=2)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "transactional.id": f"tx-{topic}",
                         "linger.ms": 0})
    producer.init_transactions(30)
    n = 0
    for per_partition, commit in TRANSACTIONS:
        producer.begin_transaction()
        for partition, count in per_partition.items():
            for _ in range(count):
                n += 1
                producer.produce(topic, value=make_event(n), partition=partition)
        assert producer.flush(30) == 0
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    return settings


def bronze_offsets(settings) -> dict[int, list[int]]:
    table = open_catalog(settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    rows = table.scan(selected_fields=("partition", "offset")).to_arrow().to_pylist()
    out: dict[int, list[int]] = {}
    for row in rows:
        out.setdefault(row["partition"], []).append(row["offset"])
    return {p: sorted(o) for p, o in out.items()}


def test_kafka_confirms_markers_and_aborted_transactions_and_finds_a_lost_record(transactional_lake):
    from flows.ingest import ingest_flow

    settings = transactional_lake
    report = ingest_flow(settings=settings)
    assert report["lag_left"] == 0 and report["total_records"] == 15, report
    assert bronze_offsets(settings) == COMMITTED
    catalog = open_catalog(settings, "serving")
    probe = KafkaGapProbe.from_settings(settings, stall_seconds=10, max_seconds=30)

    # tables alone: the aborted transactions' gaps (6 and 4 offsets) can't be told from losses
    alone = verify(catalog, settings, ("bronze",))
    contiguous = alone.check("bronze.offsets_contiguous")
    assert alone.ok and contiguous.warning and "run with --kafka to confirm" in contiguous.detail, render_table(alone)
    assert contiguous.counts["unexplained_gaps"] == 4
    assert not verify(catalog, settings, ("bronze",), strict=True).ok

    # with Kafka: every gap is the broker's own, so even strict passes
    confirmed = verify(catalog, settings, strict=True, kafka=probe)
    assert confirmed.ok and not confirmed.warnings, render_table(confirmed)
    kafka = confirmed.check("bronze.offsets_contiguous").counts["kafka"]
    assert (kafka["gaps"], kafka["confirmed_gaps"], kafka["lost_records"]) == (4, 4, 0), kafka
    assert kafka["confirmed_offsets"] == sum(HIGH.values()) - sum(len(v) for v in COMMITTED.values())

    # bronze loses two committed records: p0@12 (a gap of one offset, like a marker) and p1@8
    # (joining the trailing marker's gap)
    bronze = open_catalog(settings, "ingest").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    for partition, offset in ((0, 12), (1, 8)):
        bronze.delete(And(EqualTo("partition", partition), EqualTo("offset", offset)))
    catalog = open_catalog(settings, "serving")

    alone = verify(catalog, settings, ("bronze",))  # tables alone: warnings, the loss looks like a marker
    assert alone.ok and alone.check("bronze.offsets_contiguous").warning, render_table(alone)
    assert failed_names(verify(catalog, settings, ("bronze",), strict=True)) == {"bronze.offsets_contiguous"}

    lost = verify(catalog, settings, ("bronze",), kafka=probe)  # not strict: a lost record fails
    assert failed_names(lost) == {"bronze.offsets_contiguous"}, render_table(lost)
    detail = lost.first_failure.detail
    topic = settings.kafka_topic
    assert f"{topic}[0]@12" in detail and f"{topic}[1]@8" in detail, detail
    kafka = lost.first_failure.counts["kafka"]
    assert (kafka["lost_records"], kafka["lost_gaps"], kafka["confirmed_gaps"]) == (2, 2, 3), kafka


def failed_names(report) -> set[str]:
    return {check.name for check in report.checks if not check.ok}
