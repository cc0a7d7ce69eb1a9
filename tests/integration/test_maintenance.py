"""Maintenance against real files: compaction keeps every row and survives a concurrent append,
expiry deletes exactly what no retained snapshot reaches, orphan removal deletes only old
unreferenced files, dry runs change nothing; the flow on the stack's Prefect; storage on SeaweedFS."""

from __future__ import annotations

import os
import time
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

from tasks.catalog import open_catalog
from tasks.maintenance import compact_table, expire_table, remove_orphans
from tasks.maintenance.checksum import row_checksum
from tasks.maintenance.inventory import metadata_files, reachable_files
from tasks.maintenance.storage import delete_files, list_files, normalize
from tasks.tables import GOLD_DAILY_PLAN_METRICS, ensure_table

pytestmark = pytest.mark.stack

DAY_MS = 86_400_000
DAYS = (date(2024, 3, 1), date(2024, 3, 2))


def tuned(settings, **extra):
    """Small files count as small; everything else at its default unless given."""
    return settings.model_copy(update={"maintenance_target_file_bytes": 1024 * 1024,
                                       "maintenance_small_file_bytes": 512 * 1024, **extra})


def rows(table, day: date, start: int, n: int = 5) -> pa.Table:
    data = [{"event_date": day, "user_plan": f"plan-{i}", "requests": i, "successes": i // 2, "unique_users": 1}
            for i in range(start, start + n)]
    return pa.Table.from_pylist(data, schema=table.schema().as_arrow())


def table_with_small_files(settings, appends: int = 6):
    """A day-partitioned gold table after ``appends`` appends, each adding one file to each of two days."""
    table = ensure_table(open_catalog(settings, "gold"), settings, GOLD_DAILY_PLAN_METRICS)
    for i in range(appends):
        table.append(pa.concat_tables([rows(table, day, i * 10) for day in DAYS]))
    return table


def files_on_disk(table) -> dict[str, int]:
    return {f.uri: f.mtime_ms for f in list_files(table.location(), None)}


def data_file_count(table) -> int:
    return sum(1 for _ in table.refresh().scan().plan_files())


def later(days: float) -> int:
    return int(time.time() * 1000 + days * DAY_MS)


def test_compaction_keeps_every_row_and_reduces_files(private):
    settings = tuned(private)
    table = table_with_small_files(settings)
    before = row_checksum(table.scan().to_arrow())
    assert data_file_count(table) == 12
    snapshot = table.current_snapshot().snapshot_id

    # fresh partitions (files committed within 24 hours) are left alone
    report = compact_table(table, settings)
    assert report["plan"] == [] and len(report["fresh_partitions"]) == 2

    dry = compact_table(table, settings, dry_run=True, now_ms=later(2))
    assert [p["files"] for p in dry["plan"]] == [6, 6] and [p["new_files"] for p in dry["plan"]] == [1, 1]
    assert table.refresh().current_snapshot().snapshot_id == snapshot  # a dry run commits nothing

    report = compact_table(table, settings, now_ms=later(2))
    assert report["committed"] == 2
    assert report["before"]["files"] == 12 and report["after"]["files"] == 2
    assert report["before"]["rows"] == report["after"]["rows"] == 60
    assert report["after"]["avg_file_bytes"] > report["before"]["avg_file_bytes"]
    table = table.refresh()
    assert data_file_count(table) == 2
    assert row_checksum(table.scan().to_arrow()) == before
    assert table.current_snapshot().summary["lakehouse.maintenance.operation"] == "compaction"
    assert table.scan(snapshot_id=snapshot).to_arrow().num_rows == 60  # time travel before it still reads

    again = compact_table(table, settings, now_ms=later(2))  # nothing left to compact
    assert again["plan"] == [] and again["after"]["files"] == 2


def test_an_append_that_commits_during_compaction_is_kept_once(private):
    settings = tuned(private)
    table = table_with_small_files(settings)
    before = row_checksum(table.scan().to_arrow())
    other = open_catalog(settings, "gold").load_table(GOLD_DAILY_PLAN_METRICS.identifier)  # another writer's handle
    appended = pa.concat_tables([rows(other, DAYS[0], 1000), rows(other, date(2024, 3, 3), 2000)])
    fired = []

    def append_concurrently(stage, partition):
        if stage == "commit-staged" and not fired:  # compaction's replace is built; not committed yet
            fired.append(partition)
            other.refresh().append(appended)

    report = compact_table(table, settings, now_ms=later(2), on_stage=append_concurrently)
    assert fired, "the hook never ran"
    first = next(p for p in report["partitions"] if p["conflicts"])
    assert first["conflicts"] == 1 and first["status"] == "committed"
    assert report["committed"] == 2
    table = table.refresh()
    everything = table.scan().to_arrow()
    assert row_checksum(everything) == before + row_checksum(appended)  # nothing lost, nothing twice
    assert everything.num_rows == 70
    # the appended file of the compacted day was folded in on the retry; the new day's stays alone
    assert data_file_count(table) == 3
    snapshots = table.metadata.snapshots
    assert sum(s.summary.operation.value == "append" for s in snapshots) == 7


def test_expiry_deletes_what_no_retained_snapshot_reaches(private):
    settings = tuned(private, maintenance_keep_last_snapshots=2)
    table = table_with_small_files(settings, appends=4)
    compact_table(table, settings, now_ms=later(2))
    table = table.refresh()
    tagged = table.metadata.snapshots[1].snapshot_id
    table.manage_snapshots().create_tag(tagged, "audit").commit()
    table = table.refresh()
    checksums = {s.snapshot_id: row_checksum(table.scan(snapshot_id=s.snapshot_id).to_arrow())
                 for s in table.metadata.snapshots}
    on_disk = files_on_disk(table)

    dry = expire_table(table, settings, layer="gold", dry_run=True, now_ms=later(10))
    assert dry["files"] and files_on_disk(table) == on_disk
    assert table.refresh().metadata.snapshots == table.metadata.snapshots

    report = expire_table(table, settings, layer="gold", now_ms=later(10))
    table = table.refresh()
    retained = {s.snapshot_id for s in table.metadata.snapshots}
    assert tagged in retained and table.current_snapshot().snapshot_id in retained
    assert len(retained) == 3  # the two newest and the tagged one
    assert set(report["snapshots_expired"]) == set(checksums) - retained
    assert report["files"] == dry["files"] and report["deleted"] == len(report["files"])

    remaining = files_on_disk(table)
    assert not set(report["files"]) & set(remaining)
    assert set(on_disk) - set(report["files"]) <= set(remaining)
    assert set(remaining) - set(on_disk) == {normalize(table.metadata_location)}  # the expiry's own commit
    reached = reachable_files(table.metadata, table.io) | metadata_files(table.metadata, table.metadata_location)
    assert reached <= set(remaining) | {normalize(table.metadata_location)}
    assert normalize(table.metadata_location) in set(files_on_disk(table))
    # every deleted file was something only expired snapshots reached: old manifest lists, and the
    # small data files the compaction replaced (the tag still pins the first day's two early files)
    deleted = report["files"]
    assert any(p.endswith(".avro") and "/snap-" in p for p in deleted)
    assert any(p.endswith(".parquet") for p in deleted)
    for snapshot_id in retained:  # time travel to everything retained still reads the same rows
        assert row_checksum(table.scan(snapshot_id=snapshot_id).to_arrow()) == checksums[snapshot_id]
    assert row_checksum(table.scan().to_arrow()).rows == 40


def test_orphans_old_and_unreferenced_go_fresh_ones_stay(private):
    settings = tuned(private)
    table = table_with_small_files(settings, appends=2)
    location = Path(normalize(table.location()))
    stray_old = location / "data" / "event_date=2024-03-01" / "crashed-writer.parquet"
    stray_meta = location / "metadata" / "00099-crashed.metadata.json"
    stray_new = location / "data" / "in-flight.parquet"
    for path in (stray_old, stray_meta, stray_new):
        path.write_bytes(b"partial")
    ten_days_ago = time.time() - 10 * 86400
    for path in location.rglob("*"):  # everything old, referenced or not: only references protect
        if path.is_file() and path != stray_new:
            os.utime(path, (ten_days_ago, ten_days_ago))
    before = files_on_disk(table)

    dry = remove_orphans(table, settings, dry_run=True)
    assert dry["files"] == sorted([str(stray_meta), str(stray_old)]) and dry["deleted"] == 0
    assert files_on_disk(table) == before

    report = remove_orphans(table, settings)
    assert report["deleted"] == 2
    assert not stray_old.exists() and not stray_meta.exists() and stray_new.exists()
    assert set(files_on_disk(table)) == set(before) - {str(stray_old), str(stray_meta)}
    assert table.refresh().scan().to_arrow().num_rows == 20  # nothing referenced was touched


def test_flow_dry_run_changes_nothing_then_the_run_does_it_all(private):
    from flows.maintenance import maintenance_flow

    settings = tuned(private, maintenance_freshness_hours=0, maintenance_retention_gold_days=0,
                     maintenance_keep_last_snapshots=1)
    table = table_with_small_files(settings, appends=3)
    stray = Path(normalize(table.location())) / "data" / "crashed-writer.parquet"
    stray.write_bytes(b"partial")
    os.utime(stray, (time.time() - 10 * 86400,) * 2)
    before, checksum = files_on_disk(table), row_checksum(table.scan().to_arrow())
    metadata_location = table.metadata_location

    dry = maintenance_flow(dry_run=True, settings=settings)
    assert dry["dry_run"] and list(dry["tables"]) == [GOLD_DAILY_PLAN_METRICS.identifier]
    steps = dry["tables"][GOLD_DAILY_PLAN_METRICS.identifier]
    assert steps["compaction"]["plan"] and steps["expiry"]["snapshots_expired"] and steps["orphans"]["files"] == [str(stray)]
    assert dry["totals"]["files_compacted"] == 6 and dry["totals"]["snapshots_expired"] == 2
    assert files_on_disk(table) == before and table.refresh().metadata_location == metadata_location

    report = maintenance_flow(settings=settings)
    totals = report["totals"]
    assert totals["partitions_compacted"] == 2 and totals["files_compacted"] == 6 and totals["files_written"] == 2
    assert totals["snapshots_expired"] >= 3 and totals["orphans_deleted"] == 1
    table = table.refresh()
    assert len(table.metadata.snapshots) == 1 and data_file_count(table) == 2
    assert row_checksum(table.scan().to_arrow()) == checksum
    assert not stray.exists()
    # only what the one retained snapshot and the metadata reach is left
    reached = reachable_files(table.metadata, table.io) | metadata_files(table.metadata, table.metadata_location)
    assert {f for f in files_on_disk(table) if not f.endswith(".metadata.json")} == {
        f for f in reached if not f.endswith(".metadata.json")}


def test_on_s3_expiry_and_orphans_list_and_delete_objects(stack_settings, tmp_path):
    """A private SQLite catalog whose table lives on SeaweedFS, under a prefix of its own."""
    settings = tuned(stack_settings, catalog_type="sql", catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
                     maintenance_keep_last_snapshots=1)
    prefix = f"maintenance-tests/{uuid.uuid4().hex}"
    location = f"s3://{settings.bucket('gold')}/{prefix}/t"
    catalog = open_catalog(settings, "maintenance")
    catalog.create_namespace("maint")
    schema = Schema(NestedField(1, "id", LongType(), required=False), NestedField(2, "name", StringType(), required=False))
    table = catalog.create_table("maint.t", schema=schema, location=location,
                                 properties={"commit.retry.num-retries": "0"})
    try:
        for i in range(3):
            table.append(pa.Table.from_pylist([{"id": i, "name": f"n{i}"}], schema=schema.as_arrow()))
        table = table.refresh()
        stray = f"{location}/data/crashed-writer.parquet"
        with table.io.new_output(stray).create(overwrite=True) as out:
            out.write(b"partial")
        listed = {f.uri for f in list_files(location, settings)}
        assert stray in listed and normalize(table.metadata_location) in listed
        assert not any(u.startswith(f"s3://{settings.bucket('gold')}/{prefix}/t2") for u in listed)

        expiry = expire_table(table, settings, layer="gold", now_ms=later(10))
        assert len(expiry["snapshots_expired"]) == 2 and expiry["deleted"] == len(expiry["files"]) == 2  # manifest lists
        orphans = remove_orphans(table, settings, now_ms=later(10))
        assert orphans["files"] == [stray] and orphans["deleted"] == 1
        left = {f.uri for f in list_files(location, settings)}
        assert stray not in left and not set(expiry["files"]) & left
        assert table.refresh().scan().to_arrow().num_rows == 3
    finally:
        delete_files([f.uri for f in list_files(f"s3://{settings.bucket('gold')}/{prefix}", settings)], settings)


def test_expiry_keeps_what_a_downstream_table_has_not_promoted(private):
    from tasks.commits import upstream_key
    from tasks.maintenance import downstream_watermarks
    from tasks.scans import plan_increment
    from tasks.tables import GOLD_DAILY_CONVERSION_METRICS

    settings = tuned(private, maintenance_keep_last_snapshots=1)
    upstream = table_with_small_files(settings, appends=5)
    ids = [s.snapshot_id for s in upstream.metadata.snapshots]
    downstream = ensure_table(open_catalog(settings, "gold"), settings, GOLD_DAILY_CONVERSION_METRICS)
    downstream.append(pa.Table.from_pylist([{"event_date": DAYS[0]}], schema=downstream.schema().as_arrow()),
                      snapshot_properties={upstream_key(GOLD_DAILY_PLAN_METRICS.identifier): str(ids[1])})
    marks = downstream_watermarks([upstream, downstream.refresh()])
    assert marks == {GOLD_DAILY_PLAN_METRICS.identifier: {ids[1]}}

    report = expire_table(upstream, settings, layer="gold", now_ms=later(10),
                          watermarks=marks[GOLD_DAILY_PLAN_METRICS.identifier])
    assert report["snapshots_expired"] == [ids[0]]
    increment = plan_increment(upstream.refresh(), ids[1], ids[-1])  # what the downstream reads next
    assert increment.snapshot_ids == tuple(ids[2:]) and len(increment.files) == 6
