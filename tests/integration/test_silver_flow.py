"""Silver promotion on a private SQL catalog, with the stack's Prefect and Ray: dedup across
batches, late data, v2 schema evolution, crashes between commits, and idempotent reruns."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tasks.catalog import open_catalog
from tasks.tables import SILVER_CONVERSION_EVENTS_REJECTED, SILVER_DIM_USERS, SILVER_FACT_CONVERSIONS
from tests.conftest import ROOT
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event, private_env

pytestmark = pytest.mark.stack


def promote(settings) -> dict:
    from flows.silver import silver_flow

    return silver_flow(settings=settings)


def table_rows(settings, spec, **scan):
    return open_catalog(settings, "serving").load_table(spec.identifier).scan(**scan).to_arrow()


def test_duplicates_across_batches_keep_one_row_and_reruns_commit_nothing(private):
    land_in_bronze(private, [make_event(1), make_event(2), b"not json"])
    first = promote(private)
    assert (first["facts"], first["rejected"], first["duplicates_dropped"]) == (2, 1, 0)
    land_in_bronze(private, [make_event(1), make_event(3)], at=NOW + timedelta(days=2))
    second = promote(private)
    assert (second["facts"], second["duplicates_dropped"]) == (1, 1)
    facts = table_rows(private, SILVER_FACT_CONVERSIONS)
    ids = facts.column("event_id").to_pylist()
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3
    snapshots = len(open_catalog(private, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier).history())
    again = promote(private)
    assert again["bronze_records"] == 0 and again["committed"] == {}
    assert len(open_catalog(private, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier).history()) == snapshots


def test_late_event_lands_in_its_own_event_day_partition(private):
    late = NOW - timedelta(days=4)
    land_in_bronze(private, [make_event(10, occurred=late), make_event(11)])
    promote(private)
    table = open_catalog(private, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier)
    partitions = {}
    for task in table.scan().plan_files():
        partitions[task.file.partition[0]] = task.file.record_count
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert (late - epoch).days in partitions and ((NOW - timedelta(minutes=5)) - epoch).days in partitions
    row = [r for r in table.scan().to_arrow().to_pylist() if r["event_id"] == str(uuid.UUID(int=10))][0]
    assert row["event_date"] == late.date()


def test_v2_events_add_columns_without_rewriting_and_time_travel_still_works(private):
    land_in_bronze(private, [make_event(20), make_event(21)])
    promote(private)
    before = open_catalog(private, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier)
    v1_snapshot, v1_files = before.current_snapshot().snapshot_id, {t.file.file_path for t in before.scan().plan_files()}
    land_in_bronze(private, [make_event(22, version=2)])
    promote(private)
    after = open_catalog(private, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier)
    assert {"region", "cache_hit"} <= {f.name for f in after.schema().fields}
    rows = {uuid.UUID(r["event_id"]).int: r for r in after.scan().to_arrow().to_pylist()}
    assert rows[22]["region"] == "eu-west-1" and rows[22]["cache_hit"] is True
    assert rows[20]["region"] is None and rows[21]["cache_hit"] is None
    assert v1_files <= {t.file.file_path for t in after.scan().plan_files()}  # old files untouched
    old = after.scan(snapshot_id=v1_snapshot).to_arrow()
    assert old.num_rows == 2 and "region" not in old.column_names


def test_scd2_dimension_follows_plan_changes(private):
    land_in_bronze(private, [make_event(30, occurred=NOW - timedelta(hours=3), plan="free"),
                             make_event(31, occurred=NOW - timedelta(hours=1), plan="pro")])
    promote(private)
    # a late event from between the two splits nothing: same plan as the version it falls in
    land_in_bronze(private, [make_event(32, occurred=NOW - timedelta(hours=2), plan="free"),
                             make_event(33, user=None)])
    promote(private)
    dim = sorted(table_rows(private, SILVER_DIM_USERS).to_pylist(), key=lambda r: r["valid_from"])
    assert [(r["user_plan"], r["is_current"]) for r in dim] == [("free", False), ("pro", True)]
    assert dim[0]["valid_to"] == dim[1]["valid_from"]


@pytest.mark.parametrize("point", ["read", "rejected-committed", "facts-committed"])
def test_crash_at_any_point_then_rerun_neither_drops_nor_double_counts(private, tmp_path, point):
    land_in_bronze(private, [make_event(40), make_event(41), make_event(40), b"[]", b""])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}, **private_env(tmp_path)}
    crashed = subprocess.run([sys.executable, "-m", "flows.cli", "run", "silver", "--crash-at", point],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    rerun = subprocess.run([sys.executable, "-m", "flows.cli", "run", "silver"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    facts = table_rows(private, SILVER_FACT_CONVERSIONS).column("event_id").to_pylist()
    rejected = table_rows(private, SILVER_CONVERSION_EVENTS_REJECTED)
    assert sorted(facts) == [str(uuid.UUID(int=40)), str(uuid.UUID(int=41))]
    assert rejected.num_rows == 2
    assert promote(private)["committed"] == {}
