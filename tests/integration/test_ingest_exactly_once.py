"""Kafka → bronze against the real broker, catalog and S3: exactly once through crashes and races."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pyarrow.compute as pc
import pytest
from confluent_kafka import Producer

from tasks.catalog import open_catalog
from tasks.simulator import TrafficProfile, produce
from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW
from tests.conftest import ROOT
from tests.integration.private_lakehouse import lake_environment, s3_lake

pytestmark = pytest.mark.stack
# Recent Kafka timestamps: the broker deletes records older than its retention (7 days).
RECENT = datetime.now(timezone.utc)


@pytest.fixture
def topic_settings(stack_settings, tmp_path):
    """A lakehouse of its own on the stack's services (SQLite catalog, its own buckets) reading a
    fresh topic of 3 partitions, so each test sees only its records."""
    return s3_lake(stack_settings, tmp_path, "ingest", f"it-ingest-{uuid.uuid4().hex[:8]}")


def bronze_rows(settings):
    table = open_catalog(settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    rows = table.scan(row_filter=f"topic == '{settings.kafka_topic}'").to_arrow()
    return rows


def assert_exactly_once(settings, produced: int):
    rows = bronze_rows(settings)
    keys = list(zip(rows.column("partition").to_pylist(), rows.column("offset").to_pylist()))
    assert len(keys) == produced, f"bronze holds {len(keys)} records, {produced} were produced"
    assert len(set(keys)) == len(keys), "a (topic, partition, offset) appears twice"
    return rows


def run_ingest(settings, *args: str) -> subprocess.CompletedProcess:
    env = lake_environment(settings)
    return subprocess.run([sys.executable, "-m", "flows.cli", "run", "ingest", *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_sigkill_at_each_point_then_rerun_holds_every_record_once(topic_settings):
    report = produce(topic_settings, TrafficProfile(events=3000, seed=7, malformed_rate=0.01, end=RECENT))
    for point in ("consuming", "files-written", "committed"):
        crashed = run_ingest(topic_settings, "--max-records", "700", "--crash-at", point)
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        partial = run_ingest(topic_settings, "--max-records", "700")
        assert partial.returncode == 0, partial.stderr[-2000:]
    rest = run_ingest(topic_settings, "--until-caught-up")
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert_exactly_once(topic_settings, report.events)


def test_two_concurrent_runs_neither_duplicate_nor_lose(topic_settings):
    report = produce(topic_settings, TrafficProfile(events=4000, seed=11, end=RECENT))
    env = lake_environment(topic_settings)
    command = [sys.executable, "-m", "flows.cli", "run", "ingest", "--max-records", "1500"]
    runners = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outcomes = [r.wait(timeout=600) for r in runners]
    # Both may win in turn, or one is refused cleanly (exit 3): never an error of another kind.
    assert set(outcomes) <= {0, 3}, [r.stderr.read()[-2000:] for r in runners]
    rest = run_ingest(topic_settings, "--until-caught-up")
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert_exactly_once(topic_settings, report.events)


def test_odd_values_land_byte_for_byte_and_offsets_are_contiguous(topic_settings):
    from flows.ingest import ingest_flow

    odd = [
        b'{"event_id": "truncated',
        b"\x00\xff\xfe not json at all",
        b"[1, 2, 3]",
        b"",
        None,
        b'{"event_id": 5, "latency_ms": "fast"}',
        b"x" * (3 * 1024 * 1024),
    ]
    # Idempotence keeps the send order through retries; the delivery reports say which offset
    # each value got, so the check below is per offset, not per position.
    producer = Producer({"bootstrap.servers": topic_settings.kafka_bootstrap, "message.max.bytes": 8 * 1024 * 1024,
                         "enable.idempotence": True})
    sent: dict[int, bytes | None] = {}

    def delivered(err, message):
        assert err is None, err
        sent[message.offset()] = message.value()

    # Uneven spread: partition 0 gets most records, partition 2 only the odd ones.
    for i in range(300):
        producer.produce(topic_settings.kafka_topic, value=f'{{"n": {i}}}'.encode(), partition=0 if i % 10 else 1)
    for value in odd:
        producer.produce(topic_settings.kafka_topic, value=value, key=b"odd", partition=2, headers=[("h", b"v")],
                         on_delivery=delivered)
    assert producer.flush(30) == 0
    assert sorted(v or b"" for v in sent.values()) == sorted(v or b"" for v in odd)

    report = ingest_flow(settings=topic_settings)
    assert report["records"] == 300 + len(odd) and report["lag_left"] == 0
    rows = assert_exactly_once(topic_settings, 300 + len(odd))

    odd_rows = rows.filter(pc.equal(rows.column("partition"), 2)).sort_by("offset")
    assert dict(zip(odd_rows.column("offset").to_pylist(), odd_rows.column("value").to_pylist())) == sent
    assert odd_rows.column("key").to_pylist() == [b"odd"] * len(odd)
    assert odd_rows.column("headers").to_pylist()[0] == [{"key": "h", "value": b"v"}]
    for partition, count in ((0, 270), (1, 30), (2, len(odd))):
        offsets = sorted(rows.filter(pc.equal(rows.column("partition"), partition)).column("offset").to_pylist())
        assert offsets == list(range(count)), f"partition {partition} offsets are not contiguous"

    # A second run finds nothing new and commits nothing.
    again = ingest_flow(settings=topic_settings)
    assert again["records"] == 0 and again["snapshot_id"] is None


def test_snapshot_summary_holds_offsets_run_id_and_report(topic_settings):
    from flows.ingest import ingest_flow
    from tasks.commits import OFFSETS_KEY, REPORT_KEY, RUN_ID_KEY, decode_offsets

    produce(topic_settings, TrafficProfile(events=500, seed=3, malformed_rate=0, end=RECENT))
    report = ingest_flow(settings=topic_settings)
    table = open_catalog(topic_settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    summary = table.snapshot_by_id(report["snapshot_id"]).summary.additional_properties
    assert decode_offsets(summary[OFFSETS_KEY])[topic_settings.kafka_topic] == {
        int(p): o for p, o in report["offsets_to"].items()}
    assert summary[RUN_ID_KEY] == report["run_id"]
    assert '"records": 500' in summary[REPORT_KEY]


def test_transactional_producer_racing_ingest_runs_lands_exactly_the_committed_records(topic_settings):
    """Committed and aborted transactions, in bursts with quiet spells longer than the reader's
    poll timeout, written while ingest runs go on: bronze holds every committed record once, and
    no aborted one. Transaction markers and aborted records leave offset gaps in every partition."""
    import random
    import threading
    import time

    from flows.ingest import ingest_flow

    producer = Producer({"bootstrap.servers": topic_settings.kafka_bootstrap,
                         "transactional.id": f"it-tx-{uuid.uuid4().hex[:8]}", "linger.ms": 5})
    producer.init_transactions(30)
    rng = random.Random(12)
    committed: set[bytes] = set()
    aborted: set[bytes] = set()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            seq = 0
            for burst in range(14):
                for _ in range(rng.randint(1, 4)):  # a burst of a few transactions
                    time.sleep(rng.uniform(0, 0.03))
                    producer.begin_transaction()
                    values = []
                    for _ in range(rng.randint(1, 20)):
                        values.append(f'{{"seq": {seq}}}'.encode())
                        producer.produce(topic_settings.kafka_topic, value=values[-1], partition=rng.randrange(3))
                        seq += 1
                    if rng.random() < 0.3:
                        producer.abort_transaction(30)
                        aborted.update(values)
                    else:
                        producer.commit_transaction(30)
                        committed.update(values)
                time.sleep(rng.uniform(0.6, 1.2))  # quiet: longer than the reader's 0.5 s poll
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    runs = 0
    while writer.is_alive() or runs < 2:
        ingest_flow(settings=topic_settings, max_seconds=5)  # scheduled size: ranges read to their planned end
        runs += 1
    writer.join()
    assert not errors, errors
    ingest_flow(settings=topic_settings, max_batches=100)
    assert committed and aborted

    rows = bronze_rows(topic_settings)
    values = rows.column("value").to_pylist()
    assert len(values) == len(set(values)), "a committed record landed twice"
    assert not set(values) & aborted, "an aborted record landed in bronze"
    missing = committed - set(values)
    assert not missing, f"{len(missing)} of {len(committed)} committed records never reached bronze"
    assert len(values) == len(committed)
    from tasks.verify import KafkaGapProbe, verify

    # markers and aborted transactions leave gaps: the broker confirms each holds no committed record
    reconciled = verify(open_catalog(topic_settings, "serving"), topic_settings, layers=("bronze",), strict=True,
                        kafka=KafkaGapProbe.from_settings(topic_settings))
    assert reconciled.ok, reconciled.first_failure


def test_records_deleted_before_ingest_stop_it_loudly_until_an_audited_reset(topic_settings):
    """Retention deleting records bronze never read (here: Kafka's DeleteRecords, which moves the
    low watermark as retention does) stops ingest with the partition and offsets; only `lakehouse
    ingest reset` moves on, and its commit records the skipped range."""
    import json

    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    from flows.ingest import ingest_flow
    from tasks.commits import latest_offsets
    from tasks.offsets import RESET_KEY, OffsetsOutOfRangeError

    producer = Producer({"bootstrap.servers": topic_settings.kafka_bootstrap})
    for i in range(50):
        producer.produce(topic_settings.kafka_topic, value=f'{{"n": {i}}}'.encode(), partition=0)
        if i == 29:
            assert producer.flush(30) == 0
            assert ingest_flow(settings=topic_settings)["records"] == 30
    assert producer.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": topic_settings.kafka_bootstrap})
    [deleted] = admin.delete_records([TopicPartition(topic_settings.kafka_topic, 0, 40)]).values()
    deleted.result(timeout=30)

    with pytest.raises(OffsetsOutOfRangeError) as stopped:
        ingest_flow(settings=topic_settings)
    message = str(stopped.value)
    assert f"{topic_settings.kafka_topic}[0]: records 30..39 (10)" in message
    assert "lakehouse ingest reset --partition 0" in message
    by_cli = run_ingest(topic_settings)
    assert by_cli.returncode == 4 and "records 30..39 (10)" in by_cli.stderr, by_cli.stderr[-2000:]
    assert bronze_rows(topic_settings).num_rows == 30, "nothing may be committed while offsets are out of range"

    env = lake_environment(topic_settings)
    done = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", "reset", "--partition", "0", "--to", "earliest",
                           "--reason", "retention ran before ingest (test)"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reset = json.loads(done.stdout)
    [decision] = reset["decisions"]
    assert (decision["from_offset"], decision["to_offset"], decision["skipped"]) == (30, 40, 10)
    table = open_catalog(topic_settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    summary = table.snapshot_by_id(reset["snapshot_id"]).summary.additional_properties
    assert json.loads(summary[RESET_KEY])[0]["reason"] == "retention ran before ingest (test)"
    assert latest_offsets(table)[topic_settings.kafka_topic][0] == 40
    shown = subprocess.run([sys.executable, "-m", "flows.cli", "history", BRONZE_CONVERSION_EVENTS_RAW.identifier,
                            "--format", "json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    rows = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]  # JSON lines
    [row] = [r for r in rows if r["snapshot_id"] == reset["snapshot_id"]]
    assert "30→40 (skipped 10)" in row["reset"] and "retention ran before ingest" in row["reset"]

    assert ingest_flow(settings=topic_settings)["records"] == 10
    offsets = sorted(bronze_rows(topic_settings).column("offset").to_pylist())
    assert offsets == list(range(30)) + list(range(40, 50))
