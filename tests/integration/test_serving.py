"""`lakehouse sql | tables | history | diff` over a private lakehouse, with time travel across a
schema_version 2 rollout and a type widening on a gold column."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from pyiceberg.types import LongType

from tasks.catalog import open_catalog
from tasks.tables import GOLD_HOURLY_API_USAGE, SILVER_FACT_CONVERSIONS
from tests.conftest import ROOT
from tests.integration.private_lakehouse import land_in_bronze, make_event, private_env

pytestmark = pytest.mark.stack


def cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}, **private_env(tmp_path)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def build(settings) -> None:
    from flows.gold import gold_flow
    from flows.silver import silver_flow

    silver_flow(settings=settings)
    gold_flow(settings=settings)


def test_sql_time_travel_across_the_v2_rollout_and_a_gold_type_widening(private, tmp_path):
    land_in_bronze(private, [make_event(1), make_event(2)])
    build(private)
    before_v2 = open_catalog(private, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier).current_snapshot().snapshot_id
    time.sleep(1.1)
    moment = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    time.sleep(1.1)
    land_in_bronze(private, [make_event(3, version=2)])
    build(private)

    now = cli(tmp_path, "sql", "SELECT event_id, region FROM silver.fact_conversions ORDER BY event_id", "--format", "json")
    assert now.returncode == 0, now.stderr
    rows = [json.loads(line) for line in now.stdout.splitlines()]
    assert [r["region"] for r in rows] == [None, None, "eu-west-1"]

    old = cli(tmp_path, "sql", "SELECT * FROM silver.fact_conversions", "--as-of", moment, "--format", "json")
    assert old.returncode == 0, old.stderr
    old_rows = [json.loads(line) for line in old.stdout.splitlines()]
    assert len(old_rows) == 2 and "region" not in old_rows[0]  # the shape before the change
    pinned = cli(tmp_path, "sql", "SELECT count(*) AS n FROM silver.fact_conversions",
                 "--snapshot", f"silver.fact_conversions={before_v2}", "--format", "csv")
    assert pinned.returncode == 0 and pinned.stdout.strip().splitlines()[-1] == "2"

    # widen an int gold column to long: old snapshots still read, new builds still commit
    hourly = open_catalog(private, "gold").load_table(GOLD_HOURLY_API_USAGE.identifier)
    with hourly.update_schema() as update:
        update.update_column("http_status", LongType())
    land_in_bronze(private, [make_event(4)])
    build(private)
    widened = cli(tmp_path, "sql", "SELECT sum(requests) AS n, max(http_status) AS s FROM gold.hourly_api_usage", "--format", "json")
    assert widened.returncode == 0, widened.stderr
    assert json.loads(widened.stdout) == {"n": 4, "s": 200}
    assert open_catalog(private, "serving").load_table(GOLD_HOURLY_API_USAGE.identifier).schema().find_field("http_status").field_type == LongType()


def test_bad_queries_exit_2_with_one_line(private, tmp_path):
    land_in_bronze(private, [make_event(1)])
    for args in (["sql", "SELECT * FROM gold.no_such_table"], ["sql", "SELEC 1"],
                 ["sql", "SELECT 1", "--as-of", "yesterday"], ["history", "silver.nope"]):
        result = cli(tmp_path, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
        assert "Traceback" not in result.stderr


def test_tables_history_and_diff(private, tmp_path):
    land_in_bronze(private, [make_event(1)])
    build(private)
    land_in_bronze(private, [make_event(2), make_event(3)])
    build(private)
    tables = cli(tmp_path, "tables", "--format", "json")
    listed = {json.loads(line)["name"]: json.loads(line) for line in tables.stdout.splitlines()}
    assert listed["silver.fact_conversions"]["rows"] == 3 and listed["bronze.conversion_events_raw"]["files"] >= 2
    history = cli(tmp_path, "history", "bronze.conversion_events_raw", "--format", "json")
    snapshots = [json.loads(line) for line in history.stdout.splitlines()]
    assert snapshots[-1]["lakehouse"]["lakehouse.kafka.offsets"] == {"t": {"0": 3}}
    first, last = snapshots[0]["snapshot_id"], snapshots[-1]["snapshot_id"]
    added = cli(tmp_path, "diff", "bronze.conversion_events_raw", "--from", str(first), "--to", str(last), "--format", "json")
    assert added.returncode == 0, added.stderr
    assert sorted(json.loads(line)["offset"] for line in added.stdout.splitlines()) == [1, 2]
