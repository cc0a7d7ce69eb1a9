"""Fault matrix (issue 12): SIGKILL during maintenance (compaction, snapshot expiry with file
deletion), then the rerun.

A private lakehouse gets many small bronze, silver and gold files and snapshots (several small
ingests, each promoted and built), with settings that let maintenance act on fresh data (no
freshness window, small target sizes, retention 0 days, the last 2 snapshots kept). Each test
starts from the same copy of it, kills `lakehouse maintain --crash-at POINT@TABLE` in a subprocess
at one risky moment, and reruns maintenance. Every table must then read back exactly the rows it
held before maintenance (row for row), `verify` must pass, every snapshot still listed in the
metadata must read by time travel (the ones that existed before with the same rows), the chain
(silver, gold) must find nothing to redo, and the files the kill left behind must be unreferenced
ones that an orphan sweep reclaims without breaking any of that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from tasks.catalog import ensure_namespaces, open_catalog
from tasks.commits import latest_offsets
from tasks.maintenance import remove_orphans
from tasks.maintenance.checksum import row_checksum
from tasks.maintenance.inventory import live_files, referenced_files
from tasks.maintenance.storage import list_files
from tasks.settings import load_settings
from tasks.tables import ALL_TABLES, BRONZE_CONVERSION_EVENTS_RAW, SILVER_FACT_CONVERSIONS
from tasks.verify import verify
from tests.conftest import ROOT
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event, private_env

pytestmark = pytest.mark.stack

MAINTENANCE_ENV = {
    "LAKEHOUSE_MAINTENANCE_FRESHNESS_HOURS": "0",
    "LAKEHOUSE_MAINTENANCE_TARGET_FILE_BYTES": str(1024 * 1024),
    "LAKEHOUSE_MAINTENANCE_SMALL_FILE_BYTES": str(512 * 1024),
    "LAKEHOUSE_MAINTENANCE_RETENTION_BRONZE_DAYS": "0",
    "LAKEHOUSE_MAINTENANCE_RETENTION_SILVER_DAYS": "0",
    "LAKEHOUSE_MAINTENANCE_RETENTION_GOLD_DAYS": "0",
    "LAKEHOUSE_MAINTENANCE_KEEP_LAST_SNAPSHOTS": "2",
}
ROUNDS = 3


def _batch(k: int) -> list[bytes]:
    """Round k: events today and yesterday (two partitions each time), a re-sent event and a broken record."""
    batch = [make_event(10 * k + i, user=f"u-{i % 3}", plan=("free", "pro")[k % 2],
                        occurred=NOW - timedelta(days=i % 2, minutes=10 * k + i)) for i in range(4)]
    if k:
        batch += [make_event(10 * (k - 1)), b"{broken %d" % k]
    return batch


def _silver(settings) -> dict:
    from flows.silver import silver_flow

    return silver_flow(settings=settings)


def _gold(settings) -> dict:
    from flows.gold import gold_flow

    return gold_flow(settings=settings)


def _canonical(rows: list[dict]) -> list:
    return sorted(repr(sorted(r.items())) for r in rows)


def _state(settings) -> dict:
    """Per table: its rows (canonical order), live data files, and a checksum per snapshot."""
    catalog = open_catalog(settings, "serving")
    out = {}
    for spec in ALL_TABLES:
        table = catalog.load_table(spec.identifier)
        out[spec.identifier] = {
            "rows": _canonical(table.scan().to_arrow().to_pylist()),
            "files": len(live_files(table).live),
            "snapshots": {s.snapshot_id: row_checksum(table.scan(snapshot_id=s.snapshot_id).to_arrow())
                          for s in table.metadata.snapshots},
            "current": row_checksum(table.scan().to_arrow()),
        }
    return out


@dataclass(frozen=True)
class Lake:
    settings: object
    folder: Path
    template: Path
    before: dict
    offsets: dict


@pytest.fixture(scope="module")
def lake(stack_settings, tmp_path_factory):
    """The lakehouse with many small files at a fixed path (its catalog holds absolute paths), and a
    copy of it each test starts from."""
    root = tmp_path_factory.mktemp("maintenance-crash")
    folder, template = root / "lake", root / "template"
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
            patch.delenv(key)
        for key, value in {**private_env(folder), **MAINTENANCE_ENV}.items():
            patch.setenv(key, value)
        settings = load_settings()
        (folder / "warehouse").mkdir(parents=True)
        ensure_namespaces(open_catalog(settings, "admin"), settings)
        for k in range(ROUNDS):
            land_in_bronze(settings, _batch(k))
            _silver(settings)
            _gold(settings)
        before = _state(settings)
        assert before[SILVER_FACT_CONVERSIONS.identifier]["files"] >= 2 * ROUNDS  # many small files
        report = verify(open_catalog(settings, "serving"), settings)
        assert report.ok, report.first_failure
        offsets = latest_offsets(open_catalog(settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier))
        time.sleep(1.1)  # every snapshot is older than "now" of the maintenance runs (retention 0 days)
        shutil.copytree(folder, template)
        yield Lake(settings, folder, template, before, offsets)


def _restore(lake: Lake) -> None:
    shutil.rmtree(lake.folder)
    shutil.copytree(lake.template, lake.folder)


def _unreferenced(settings) -> dict[str, set[str]]:
    catalog = open_catalog(settings, "serving")
    out = {}
    for spec in ALL_TABLES:
        table = catalog.load_table(spec.identifier)
        out[spec.identifier] = {f.uri for f in list_files(table.location(), settings)} - referenced_files(table)
    return out


def _assert_same_lakehouse(lake: Lake) -> dict:
    settings = lake.settings
    after = _state(settings)  # reads every snapshot still listed: a deleted file it needs raises
    for name, was in lake.before.items():
        now = after[name]
        assert now["rows"] == was["rows"], f"{name}: rows differ from before maintenance"
        for snapshot_id, checksum in now["snapshots"].items():
            if snapshot_id in was["snapshots"]:
                assert checksum == was["snapshots"][snapshot_id], f"{name}: snapshot {snapshot_id} reads other rows"
            else:  # a compaction's snapshot: the rows the table held before maintenance
                assert checksum == was["current"], f"{name}: compaction snapshot {snapshot_id} reads other rows"
    report = verify(open_catalog(settings, "serving"), settings)
    assert report.ok, report.first_failure
    return after


@pytest.mark.parametrize("point", [
    "compaction-files-written@silver.fact_conversions",
    "compaction-committed@silver.fact_conversions",
    "expiry-committed@bronze.conversion_events_raw",
    "expiry-half-deleted@silver.fact_conversions",
])
def test_sigkill_during_maintenance_then_rerun_keeps_every_row_and_snapshot(lake, point):
    from flows.maintenance import maintenance_flow

    _restore(lake)
    settings = lake.settings
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")},
           **private_env(lake.folder), **MAINTENANCE_ENV}
    crashed = subprocess.run([sys.executable, "-m", "flows.cli", "maintain", "--crash-at", point],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    _assert_same_lakehouse(lake)  # what the kill left is consistent already

    report = maintenance_flow(settings=settings)
    facts = SILVER_FACT_CONVERSIONS.identifier
    after = _assert_same_lakehouse(lake)
    # maintenance did its work in the end: fewer files and snapshots
    assert after[facts]["files"] < lake.before[facts]["files"]
    for name in (facts, BRONZE_CONVERSION_EVENTS_RAW.identifier):
        assert set(lake.before[name]["snapshots"]) - set(after[name]["snapshots"]), f"{name}: nothing expired"
    assert report["totals"]["files_compacted"] or point.startswith("expiry-")  # after a committed compaction, maybe none left

    # the chain finds nothing to redo: offsets and watermarks survived (silver's plan may span
    # maintenance snapshots of bronze, but no data file to promote; gold's has nothing)
    from flows.gold import plan_gold
    from flows.silver import plan_silver

    catalog = open_catalog(settings, "serving")
    assert latest_offsets(catalog.load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)) == lake.offsets
    silver_plan = plan_silver.fn(settings, "check")
    assert silver_plan.increment is None or silver_plan.increment.files == ()
    gold_plan = plan_gold.fn(settings, "check", False)
    assert gold_plan.days == () and gold_plan.users == ()

    # what the kill left behind is unreferenced (orphans); a sweep without the age window takes it
    # and nothing anything still reads
    leftovers = _unreferenced(settings)
    if not point.startswith("compaction-committed"):
        table = point.partition("@")[2]
        assert leftovers[table], "the kill left no file behind: was the point reached?"
    far_future = int(time.time() * 1000) + 100 * 3_600_000
    for spec in ALL_TABLES:
        remove_orphans(catalog.load_table(spec.identifier), settings, now_ms=far_future)
    assert not any(_unreferenced(settings).values())
    _assert_same_lakehouse(lake)
