"""Fault matrix (issue 12): the disk fills up under a running flow.

The private lakehouse (SQLite catalog and file warehouse) lives on a size-capped tmpfs the test
mounts, and a filler file created by the test leaves only a little room. (a) An ingest of big Kafka
records hits ENOSPC in the bronze writer actors; (b) a silver promotion hits it when it commits.
Each time: the run fails once (no retry loop) with an error that says the disk is full and names
where it was writing, no committed snapshot references a missing file and every table still reads;
then the filler is deleted, the flow is rerun, and bronze holds each produced record exactly once
(byte for byte), silver each well-formed event once and each broken record in quarantine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tasks.catalog import open_catalog
from tasks.tables import (
    ALL_TABLES,
    BRONZE_CONVERSION_EVENTS_RAW,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_FACT_CONVERSIONS,
    ensure_table,
)
from tests.conftest import ROOT
from tests.integration.conftest import open_private_lakehouse
from tests.integration.private_lakehouse import land_in_bronze, make_event, private_env

pytestmark = pytest.mark.stack

MB = 1024 * 1024
NO_SPACE = "No space left on device"


@pytest.fixture
def small_disk(tmp_path):
    """A size-capped tmpfs mounted at ``tmp_path/disk`` (we run as root); unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-capped tmpfs at {where} (needs root or CAP_SYS_ADMIN): "
                    f"{(mounted.stderr or mounted.stdout).strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)  # a catalog connection still open


@pytest.fixture
def lake_on_disk(small_disk, monkeypatch):
    """Settings of a private lakehouse whose catalog and warehouse are on the small disk."""
    return open_private_lakehouse(small_disk, monkeypatch)


def free_bytes(where: Path) -> int:
    stat = os.statvfs(where)
    return stat.f_bavail * stat.f_frsize


def fill(where: Path, leave: int) -> Path:
    """A filler file that leaves ``leave`` bytes free on the disk of ``where``."""
    filler = where / "filler"
    size = free_bytes(where) - leave
    assert size > 0, f"only {free_bytes(where)} bytes free on {where}"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return filler


def assert_every_snapshot_reads(settings) -> None:
    """No committed snapshot of any table references a missing file, and each one reads."""
    catalog = open_catalog(settings, "serving")
    for spec in ALL_TABLES:
        try:
            table = catalog.load_table(spec.identifier)
        except Exception:  # noqa: BLE001 - a table the flow never created
            continue
        for snapshot in table.metadata.snapshots:
            for task in table.scan(snapshot_id=snapshot.snapshot_id).plan_files():
                path = task.file.file_path.removeprefix("file://")
                assert os.path.exists(path), f"{spec.identifier} snapshot {snapshot.snapshot_id}: {path} is missing"
            table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()


def assert_clear_disk_full_error(text: str, where: Path) -> None:
    """The command's last line is one `error:` line that says the disk is full and where."""
    last = text.rstrip().splitlines()[-1]
    assert last.startswith("error: ") and NO_SPACE in last, text[-3000:]
    assert str(where) in last, f"the error does not name where it was writing: {text[-3000:]}"


# ---- (a) ingest -----------------------------------------------------------------------------


def _produce_big_records(settings, count: int, size: int) -> dict[tuple[int, int], bytes]:
    """``count`` incompressible records of ``size`` bytes, round robin on 3 partitions;
    (partition, offset) -> value from the delivery reports."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True,
                         "message.max.bytes": 4 * MB})
    sent: dict[tuple[int, int], bytes] = {}

    def delivered(err, message):
        assert err is None, err
        sent[(message.partition(), message.offset())] = message.value()

    for i in range(count):
        producer.produce(settings.kafka_topic, value=os.urandom(size), partition=i % 3, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert len(sent) == count
    return sent


def _delete_topic(settings) -> None:
    from tasks.kafka import admin_client

    admin = admin_client(settings)
    for future in admin.delete_topics([settings.kafka_topic], operation_timeout=30).values():
        try:
            future.result(timeout=60)
        except Exception:  # noqa: BLE001 - cleanup only
            pass


def test_disk_full_during_ingest_fails_clearly_then_the_rerun_lands_every_record_once(lake_on_disk, small_disk):
    from flows.ingest import ingest_flow
    from tasks.kafka import ensure_topic

    unique = uuid.uuid4().hex[:8]
    settings = lake_on_disk.model_copy(update={"kafka_topic": f"it-disk-full-{unique}",
                                               "kafka_consumer_group": f"it-disk-full-{unique}",
                                               "ingest_chunk_bytes": MB})
    ensure_topic(settings, settings.kafka_topic, partitions=3)
    try:
        sent = _produce_big_records(settings, count=180, size=128 * 1024)  # 22.5 MiB of values
        ensure_table(open_catalog(settings, "ingest"), settings, BRONZE_CONVERSION_EVENTS_RAW)
        filler = fill(small_disk, leave=12 * MB)  # room for the first batch of 60 records, not the second
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")},
               **private_env(small_disk), "LAKEHOUSE_KAFKA_TOPIC": settings.kafka_topic,
               "LAKEHOUSE_KAFKA_CONSUMER_GROUP": settings.kafka_consumer_group,
               "LAKEHOUSE_INGEST_CHUNK_BYTES": str(MB)}
        began = time.monotonic()
        failed = subprocess.run([sys.executable, "-m", "flows.cli", "run", "ingest", "--until-caught-up",
                                 "--max-records", "60"], env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=600)
        seconds = time.monotonic() - began
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert_clear_disk_full_error(failed.stderr, small_disk / "warehouse")
        assert "Retry 1/" not in failed.stderr and seconds < 120, "a full disk is not transient: no retries"

        assert_every_snapshot_reads(settings)
        table = open_catalog(settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
        landed = table.scan().to_arrow()
        assert 0 < landed.num_rows < len(sent)  # the first batches committed, the rest did not

        filler.unlink()
        report = ingest_flow(max_batches=1_000_000, settings=settings)
        assert report["lag_left"] == 0
        rows = open_catalog(settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier).scan().to_arrow()
        keys = list(zip(rows.column("partition").to_pylist(), rows.column("offset").to_pylist()))
        assert len(keys) == len(set(keys)) == len(sent), "lost or duplicated records"
        assert dict(zip(keys, rows.column("value").to_pylist())) == sent  # byte for byte
        assert_every_snapshot_reads(settings)
    finally:
        _delete_topic(settings)


# ---- (b) silver ------------------------------------------------------------------------------

FIRST = [make_event(i, user=f"u-{i % 4}") for i in range(1, 21)] + [b"{broken"]
SECOND = ([make_event(i, user=f"u-{i % 5}", plan="pro") for i in range(21, 61)]
          + [make_event(3), make_event(40), b"", b"[1, 2]"])


def test_disk_full_during_silver_commit_fails_clearly_then_the_rerun_promotes_everything_once(lake_on_disk, small_disk):
    from flows.silver import silver_flow
    from tasks.verify import verify

    settings = lake_on_disk
    land_in_bronze(settings, FIRST)
    silver_flow(settings=settings)  # the silver tables exist and hold the first batch
    land_in_bronze(settings, SECOND)
    catalog = open_catalog(settings, "serving")
    before = {spec.identifier: catalog.load_table(spec.identifier).current_snapshot().snapshot_id
              for spec in (SILVER_FACT_CONVERSIONS, SILVER_CONVERSION_EVENTS_REJECTED)}

    filler = fill(small_disk, leave=0)  # full: silver's next write fails
    began = time.monotonic()
    with pytest.raises(OSError) as failure:
        silver_flow(settings=settings)
    assert time.monotonic() - began < 120
    assert NO_SPACE in str(failure.value) and str(small_disk / "warehouse") in str(failure.value), str(failure.value)
    catalog = open_catalog(settings, "serving")
    assert {name: catalog.load_table(name).current_snapshot().snapshot_id for name in before} == before
    assert_every_snapshot_reads(settings)

    filler.unlink()
    report = silver_flow(settings=settings)
    assert (report["facts"], report["rejected"], report["duplicates_dropped"]) == (40, 2, 2)
    catalog = open_catalog(settings, "serving")
    facts = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).scan().to_arrow().column("event_id").to_pylist()
    expected = {json.loads(v)["event_id"] for v in FIRST + SECOND if v.startswith(b"{\"")}
    assert sorted(facts) == sorted(expected)  # each well-formed event once
    assert catalog.load_table(SILVER_CONVERSION_EVENTS_REJECTED.identifier).scan().to_arrow().num_rows == 3
    assert_every_snapshot_reads(settings)
    checks = verify(catalog, settings)
    assert checks.ok, checks.first_failure
