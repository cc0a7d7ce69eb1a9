"""The issue's maintenance tests, each on both backends the lakehouse runs on:

* ``s3-rest``: the running stack, SeaweedFS S3 through the Iceberg REST catalog. Every test gets a
  table of its own in the ``gold`` namespace (a uuid in the name) located under a prefix of its own
  in the gold bucket, so nothing meets the stack's real tables or another test; the table is dropped
  and the prefix emptied afterwards;
* ``embedded``: the embedded profile (SQLite catalog, file warehouse) in a temporary state folder.

Objects are listed straight from the store (boto3, or the file system), and what a table references
is read straight from its metadata here, independently of tasks.maintenance.inventory: they are the
oracle the maintenance code is checked against.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import pytest
from pyiceberg.expressions import EqualTo
from typer.testing import CliRunner

from flows.cli import app as cli_app
from tasks.catalog import ensure_namespaces, open_catalog, s3_client
from tasks.maintenance import compact_table, expire_table, remove_orphans
from tasks.maintenance.checksum import row_checksum
from tasks.maintenance.storage import normalize
from tasks.serving import QueryError, run_sql
from tasks.settings import load_settings
from tasks.tables import GOLD_DAILY_PLAN_METRICS
from tests.conftest import ROOT, STACK_CONFIG
from tests.integration.test_maintenance import DAYS, later, rows, tuned

pytestmark = pytest.mark.stack


@dataclasses.dataclass
class Backend:
    """One table's home on one backend: its settings, name and location, and the store beneath."""

    name: str
    settings: object
    identifier: str
    location: str  # as the catalog has it: s3://... or file:///...

    def create_table(self, **properties: str):
        """A fresh gold-shaped table (identity-partitioned by event_date) at this backend's location."""
        spec = GOLD_DAILY_PLAN_METRICS
        return open_catalog(self.settings, "maintenance").create_table(
            self.identifier, schema=spec.schema, partition_spec=spec.partition_spec, location=self.location,
            properties={**spec.properties, **properties})

    def objects(self) -> dict[str, int]:
        """Every object under the table's location with its last-modified time (ms), from the store itself."""
        if self.location.startswith("s3://"):
            bucket, _, prefix = self.location.removeprefix("s3://").partition("/")
            pages = s3_client(self.settings, "maintenance").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            return {f"s3://{bucket}/{o['Key']}": int(o["LastModified"].timestamp() * 1000)
                    for page in pages for o in page.get("Contents", [])}
        root = Path(normalize(self.location))
        return {str(p): int(p.stat().st_mtime * 1000) for p in root.rglob("*") if p.is_file()}

    def plant(self, relative: str, data: bytes = b"partial parquet of a crashed writer") -> str:
        """Write a file under the table's location as a writer that never committed would."""
        uri = normalize(f"{self.location}/{relative}")
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            s3_client(self.settings, "maintenance").put_object(Bucket=bucket, Key=key, Body=data)
        else:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            Path(uri).write_bytes(data)
        return uri

    def remove_all(self) -> None:
        try:
            open_catalog(self.settings, "admin").drop_table(self.identifier)
        except Exception:  # noqa: BLE001 - never created, or already gone
            pass
        if self.location.startswith("s3://"):
            bucket, _, prefix = self.location.removeprefix("s3://").partition("/")
            keys = [uri.removeprefix(f"s3://{bucket}/") for uri in self.objects()]
            client = s3_client(self.settings, "maintenance")
            for start in range(0, len(keys), 1000):
                client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})


@pytest.fixture(params=["s3-rest", "embedded"])
def backend(request, tmp_path, monkeypatch):
    """A Backend; the process environment is that of a `lakehouse` command on it (for the CLI)."""
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    suffix = uuid.uuid4().hex[:10]
    identifier = f"{GOLD_DAILY_PLAN_METRICS.identifier}_mt{suffix}"
    if request.param == "s3-rest":
        settings = request.getfixturevalue("stack_settings")
        assert settings.catalog_type == "rest" and settings.uses_s3
        monkeypatch.setenv("LAKEHOUSE_CONFIG", str(STACK_CONFIG))
        monkeypatch.setenv("LAKEHOUSE_STATE_DIR", str(ROOT / ".lakehouse"))
        location = f"s3://{settings.bucket('gold')}/maintenance-tests/{suffix}/daily_plan_metrics"
    else:
        monkeypatch.setenv("LAKEHOUSE_PROFILE", "embedded")
        monkeypatch.setenv("LAKEHOUSE_STATE_DIR", str(tmp_path / "state"))
        settings = load_settings()
        ensure_namespaces(open_catalog(settings, "admin"), settings)
        assert settings.catalog_type == "sql" and not settings.uses_s3 and not settings.ray_address
        location = f"{settings.layer_location('gold')}/daily_plan_metrics_mt{suffix}"
    here = Backend(request.param, settings, identifier, location)
    yield here
    here.remove_all()


def files_in_partition(table, day) -> int:
    return sum(1 for _ in table.refresh().scan(row_filter=EqualTo("event_date", day)).plan_files())


def references(table) -> set[str]:
    """Every object the table's metadata references: the current metadata file and its log, and for
    every snapshot its manifest list, its manifests and the data files live in it."""
    out = {normalize(table.metadata_location)} | {normalize(e.metadata_file) for e in table.metadata.metadata_log}
    for snapshot in table.metadata.snapshots:
        out.add(normalize(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            out.add(normalize(manifest.manifest_path))
            out |= {normalize(e.data_file.file_path) for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True)}
    return out


def moment(timestamp_ms: int) -> datetime:
    """A millisecond after a commit: that commit's state is the current one."""
    return datetime.fromtimestamp((timestamp_ms + 1) / 1000, timezone.utc)


def kind(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    if name.endswith(".metadata.json"):
        return "metadata"
    if name.endswith(".parquet"):
        return "data"
    if name.startswith("snap-") and name.endswith(".avro"):
        return "manifest list"
    return "manifest" if name.endswith(".avro") else "other"


def test_compaction_after_60_micro_batches_leaves_at_most_two_files(backend):
    settings = tuned(backend.settings)
    table = backend.create_table()
    for batch in range(60):  # one commit each, as the streaming micro-batches land
        table.append(rows(table, DAYS[0], batch * 3, n=3))
    table = table.refresh()
    before = row_checksum(table.scan().to_arrow())
    assert files_in_partition(table, DAYS[0]) == 60 and before.rows == 180

    report = compact_table(table, settings, now_ms=later(2))  # two days on: the day is no longer fresh

    assert report["committed"] == 1 and report["before"]["files"] == 60 and report["after"]["files"] <= 2
    assert report["before"]["rows"] == report["after"]["rows"] == 180
    table = table.refresh()
    assert files_in_partition(table, DAYS[0]) <= 2
    after = table.scan().to_arrow()
    assert after.num_rows == 180 and row_checksum(after) == before


def test_expiry_deletes_exactly_the_unreferenced_objects_and_time_travel_holds(backend):
    settings = tuned(backend.settings, maintenance_keep_last_snapshots=2)
    # A short metadata log: the expiry's own commit pushes an old metadata file off it.
    table = backend.create_table(**{"write.metadata.previous-versions-max": "3"})
    for batch in range(4):
        table.append(rows(table, DAYS[0], batch * 10))
    compact_table(table, settings, now_ms=later(2))  # the four small files are replaced by one
    table.refresh().append(rows(table, DAYS[1], 100))
    table = table.refresh()
    ids = [s.snapshot_id for s in sorted(table.metadata.snapshots, key=lambda s: s.sequence_number)]
    assert len(ids) == 6
    table.manage_snapshots().create_tag(ids[1], "audit").commit()
    table = table.refresh()
    checksums = {i: row_checksum(table.scan(snapshot_id=i).to_arrow()) for i in ids}
    committed = {s.snapshot_id: s.timestamp_ms for s in table.metadata.snapshots}
    referenced_before, objects_before = references(table), set(backend.objects())
    assert referenced_before <= objects_before

    report = expire_table(table, settings, layer="gold", now_ms=later(10))

    table = table.refresh()
    objects_after, referenced_after = set(backend.objects()), references(table)
    retained = {s.snapshot_id for s in table.metadata.snapshots}
    assert retained == {ids[1], ids[-2], ids[-1]}  # the tagged one and the last two
    assert set(report["snapshots_expired"]) == set(ids) - retained
    deleted = objects_before - objects_after
    # exactly what was referenced before and no retained snapshot (nor the metadata) reaches now
    assert deleted == (objects_before & referenced_before) - referenced_after
    assert deleted == set(report["files"]) and report["deleted"] == len(deleted)
    assert {kind(u) for u in deleted} == {"data", "manifest", "manifest list", "metadata"}
    assert objects_after - objects_before == {normalize(table.metadata_location)}  # the expiry's commit
    assert referenced_after <= objects_after
    # nothing else unreferenced is left but what already was (old metadata off the log: orphans)
    assert objects_after - referenced_after == objects_before - referenced_before

    for snapshot_id in retained:  # time travel to every retained snapshot reads its rows
        assert row_checksum(table.scan(snapshot_id=snapshot_id).to_arrow()) == checksums[snapshot_id]
    query = f"SELECT count(*) AS n FROM {backend.identifier}"
    pinned = run_sql(backend.settings, query, snapshots={backend.identifier: ids[1]})
    assert pinned.column("n").to_pylist() == [checksums[ids[1]].rows]

    newest = run_sql(backend.settings, query, as_of=moment(committed[ids[-1]]))
    assert newest.column("n").to_pylist() == [checksums[ids[-1]].rows]

    expired = ids[3]
    with pytest.raises(QueryError, match=f"^{backend.identifier} has no snapshot {expired}: expired"):
        run_sql(backend.settings, query, snapshots={backend.identifier: expired})
    # by time too: while ids[3] was current, not the older retained (tagged) state
    assert committed[ids[3]] + 1 < committed[ids[4]]
    with pytest.raises(QueryError, match=f"^{backend.identifier} has no retained state as of .*: that state was expired"):
        run_sql(backend.settings, query, as_of=moment(committed[ids[3]]))
    with mock.patch.dict(os.environ):  # the CLI exports Ray's settings into the environment
        for pin in (f"{backend.identifier}={expired}", str(expired)):
            cli = CliRunner().invoke(cli_app, ["sql", query, "--snapshot", pin])
            assert cli.exit_code == 2, cli.output
            assert len(cli.stderr.strip().splitlines()) == 1 and str(expired) in cli.stderr, cli.stderr


def test_orphans_older_than_the_window_go_newer_ones_stay(backend):
    settings = tuned(backend.settings)
    table = backend.create_table()
    table.append(rows(table, DAYS[0], 0))
    old = backend.plant("data/event_date=2024-03-01/00000-0-crashed-writer.parquet")
    time.sleep(1.1)  # S3 keeps last-modified times to the second
    new = backend.plant("data/event_date=2024-03-01/00000-1-writer-in-flight.parquet")
    objects = backend.objects()
    assert objects[old] < objects[new]
    # The store can't back-date an object, so the clock moves instead: the window (72 h) after a
    # moment between the two plantings, `old` is older than the window and `new` is not.
    window_ms = int(settings.maintenance_orphan_age_hours * 3_600_000)
    now_ms = (objects[old] + objects[new]) // 2 + window_ms

    report = remove_orphans(table, settings, now_ms=now_ms)

    assert report["files"] == [old] and report["deleted"] == 1
    assert set(backend.objects()) == set(objects) - {old}  # the table's own files are older still: kept
    assert table.refresh().scan().to_arrow().num_rows == 5
