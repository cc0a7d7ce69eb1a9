"""A bronze backlog promoted in bounded batches ends, cell for cell, where one unbounded promotion
of the same bronze ends: dedup across batches, earlier arrivals in later batches, late events and
SCD2 users included, and also after a crash between two batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from tasks.catalog import open_catalog
from tasks.commits import upstream_key
from tasks.tables import (
    BRONZE_CONVERSION_EVENTS_RAW,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
)
from tests.conftest import ROOT
from tests.integration.conftest import open_private_lakehouse
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event, private_env

pytestmark = pytest.mark.stack

BOUND = 500
PLANS = ("free", "pro")


def _snapshot(k: int, size: int, previous: int, early: int) -> tuple[list[bytes], object]:
    """Bronze snapshot ``k``: ``size`` records, among them resends of earlier snapshots' events,
    late events (days old), plan changes of 40 users, and malformed records. Snapshot ``early``
    arrives with an earlier Kafka time than the others, so its copies of the previous snapshot's
    events replace the stored facts."""
    values = []
    for i in range(size):
        n = k * 1000 + i
        if i % 7 == 3 and i <= previous:
            n = (k - 1) * 1000 + i - 1  # a resend of the previous snapshot's event (never itself a resend)
        if i % 97 == 5:
            values.append(b"not json")
            continue
        late = timedelta(days=n % 5) if n % 11 == 0 else timedelta(0)
        occurred = NOW - timedelta(hours=3, minutes=n % 600) - late
        values.append(make_event(n, occurred=occurred, user=f"u-{n % 40}", plan=PLANS[(n // 40) % 2]))
    at = NOW - timedelta(hours=2) if k == early else NOW - timedelta(hours=1) + timedelta(minutes=k)
    return values, at


SIZES = (300, 300, 450, 200, 250, 500, 350, 600)  # by 500 records: [300] [300] [450] [200 250] [500] [350] [600]
BATCHES = 7


def _land(settings, sizes=SIZES, early: int = 5) -> None:
    for k, size in enumerate(sizes):
        values, at = _snapshot(k, size, sizes[k - 1] if k else 0, early)
        land_in_bronze(settings, values, at=at)


def _lake(tmp_path, monkeypatch, name: str, **bounds):
    folder = tmp_path / name
    folder.mkdir()
    return open_private_lakehouse(folder, monkeypatch).model_copy(update=bounds)


def _promote(settings) -> dict:
    from flows.silver import silver_flow

    return silver_flow(settings=settings)


def _silver(settings) -> dict[str, list[tuple]]:
    """Every silver table's rows, sorted, with bronze snapshot ids as their position in bronze's
    history (the two lakehouses' bronze tables commit the same records under other ids)."""
    catalog = open_catalog(settings, "serving")
    bronze = catalog.load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    position = {entry.snapshot_id: index for index, entry in enumerate(bronze.history())}
    tables = {}
    for spec in (SILVER_FACT_CONVERSIONS, SILVER_CONVERSION_EVENTS_REJECTED, SILVER_DIM_USERS):
        rows = catalog.load_table(spec.identifier).scan().to_arrow().to_pylist()
        for row in rows:
            if "bronze_snapshot_id" in row:
                row["bronze_snapshot_id"] = position[row["bronze_snapshot_id"]]
        tables[spec.identifier] = sorted(tuple(sorted(row.items(), key=lambda kv: kv[0])) for row in rows)
    return tables


def _promotions(settings) -> int:
    """How many promotions dim_users (the last commit of each) records: distinct bronze watermarks."""
    table = open_catalog(settings, "serving").load_table(SILVER_DIM_USERS.identifier)
    key = upstream_key(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    return len({s.summary.additional_properties[key] for s in table.snapshots()
                if s.summary is not None and key in s.summary.additional_properties})


def test_bounded_batches_end_where_one_big_promotion_ends(tmp_path, monkeypatch, stack_settings):
    whole = _lake(tmp_path, monkeypatch, "whole")
    bounded = _lake(tmp_path, monkeypatch, "bounded", silver_max_batch_records=BOUND)
    for lake in (whole, bounded):
        _land(lake)
    one = _promote(whole)
    assert "batches" in one and len(one["batches"]) == 1
    report = _promote(bounded)
    assert len(report["batches"]) == BATCHES
    assert max(batch["bronze_records"] for batch in report["batches"]) == 600  # the one larger snapshot, alone
    assert all(batch["bronze_records"] <= BOUND for batch in report["batches"][:-1])
    assert report["bronze_records"] == one["bronze_records"] == sum(SIZES)
    assert report["replaced_by_earlier_arrival"] > 0  # snapshot 5's earlier copies crossed batches
    assert _promotions(bounded) == BATCHES and _promotions(whole) == 1
    expected, got = _silver(whole), _silver(bounded)
    for name in expected:
        assert got[name] == expected[name], name
    facts = got[SILVER_FACT_CONVERSIONS.identifier]
    ids = [dict(row)["event_id"] for row in facts]
    assert len(ids) == len(set(ids)) and len(ids) > 0
    assert _promote(bounded)["committed"] == {}  # caught up: a rerun commits nothing
    from tasks.verify import verify

    reconciled = verify(open_catalog(bounded, "serving"), bounded, layers=("silver",))
    assert reconciled.ok, reconciled.first_failure


def test_a_crash_between_bounded_batches_resumes_where_it_left_off(tmp_path, monkeypatch, stack_settings):
    sizes = SIZES[3:7]  # by 500 records: [200 250] [500] [350]
    whole = _lake(tmp_path, monkeypatch, "whole")
    crashed = _lake(tmp_path, monkeypatch, "crashed")
    for lake in (whole, crashed):
        _land(lake, sizes, early=2)
    _promote(whole)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")},
           **private_env(tmp_path / "crashed"), "LAKEHOUSE_SILVER_MAX_BATCH_RECORDS": str(BOUND)}
    run = [sys.executable, "-m", "flows.cli", "run", "silver"]
    killed = subprocess.run(run + ["--crash-at", "batch-committed"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert _promotions(crashed) == 1  # the first batch, committed whole
    rerun = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _promotions(crashed) == 3
    assert json.loads(rerun.stdout)["replaced_by_earlier_arrival"] > 0  # of facts the crashed run committed
    expected, got = _silver(whole), _silver(crashed)
    for name in expected:
        assert got[name] == expected[name], name
