"""Fault matrix (issue 12): SIGKILL during a gold build, then the rerun.

Two silver promotions land in a private lakehouse; gold is built after the first, and the build
after the second is killed (`lakehouse run gold --crash-at POINT` in a subprocess) at each point of
``flows.gold.CRASH_POINTS``, each time from the same copy of the lakehouse. After the rerun, every
gold table equals, row for row, the gold an uninterrupted build made from that copy, and its counts
equal a recount in plain Python of the events the test produced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

from tasks.catalog import ensure_namespaces, open_catalog
from tasks.commits import upstream_snapshot
from tasks.settings import load_settings
from tasks.tables import (
    GOLD_DAILY_CONVERSION_METRICS,
    GOLD_DAILY_PLAN_METRICS,
    GOLD_HOURLY_API_USAGE,
    GOLD_TABLES,
    GOLD_USER_ACTIVITY_SUMMARY,
    GOLD_USER_DAILY_ACTIVITY,
    SILVER_FACT_CONVERSIONS,
)
from tests.conftest import ROOT
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event, private_env
from tests.integration.test_gold_incremental import snapshot_of_gold

pytestmark = pytest.mark.stack

FAILED = {"success": False, "output": None, "error_code": "OUT_OF_RANGE", "http_status": 422, "input": "5000"}
FIRST = [make_event(1, user="u-a", plan="free", occurred=NOW - timedelta(hours=5)),
         make_event(2, user="u-b", plan="free", occurred=NOW - timedelta(days=1, hours=2)),
         make_event(3, user="u-a", plan="free", occurred=NOW - timedelta(days=1, hours=3), **FAILED),
         make_event(4, user=None, occurred=NOW - timedelta(hours=4))]
# a late day, a new user, a plan change, a duplicate of a first-batch event and a broken record:
# the build killed here touches old and new days and old and new users
SECOND = [make_event(5, user="u-c", plan="pro", occurred=NOW - timedelta(days=6, hours=1)),
          make_event(6, user="u-a", plan="pro", occurred=NOW - timedelta(hours=1), direction="from_roman",
                     input="IV", output="4", endpoint="/v1/from-roman"),
          make_event(7, user="u-b", plan="free", occurred=NOW - timedelta(minutes=30), **FAILED),
          make_event(2, user="u-b", plan="free", occurred=NOW - timedelta(days=1, hours=2)),
          b"{broken"]
DAILY = (GOLD_DAILY_CONVERSION_METRICS, GOLD_DAILY_PLAN_METRICS, GOLD_HOURLY_API_USAGE, GOLD_USER_DAILY_ACTIVITY)


def _silver(settings) -> dict:
    from flows.silver import silver_flow

    return silver_flow(settings=settings)


def _gold(settings) -> dict:
    from flows.gold import gold_flow

    return gold_flow(settings=settings)


def _events() -> list[dict]:
    """The distinct well-formed events the test produced (the duplicate once)."""
    seen = {}
    for raw in FIRST + SECOND:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        seen.setdefault(event["event_id"], event)
    return list(seen.values())


def _truth() -> tuple[dict, dict]:
    """(per (day, direction): requests, successes, failures, unique users; per user: requests,
    successes, active days, current plan) recounted from the produced events."""
    daily: dict[tuple, list] = {}
    users: dict[str, dict] = {}
    for e in _events():
        key = (date.fromisoformat(e["occurred_at"][:10]), e["direction"])
        row = daily.setdefault(key, [0, 0, 0, set()])
        row[0] += 1
        row[1 if e["success"] else 2] += 1
        if e["user_id"]:
            row[3].add(e["user_id"])
            mine = users.setdefault(e["user_id"], {"requests": 0, "successes": 0, "days": set(), "latest": ("", None)})
            mine["requests"] += 1
            mine["successes"] += int(e["success"])
            mine["days"].add(e["occurred_at"][:10])
            mine["latest"] = max(mine["latest"], (e["occurred_at"], e["user_plan"]))
    return ({k: (r, s, f, len(u)) for k, (r, s, f, u) in daily.items()},
            {u: (m["requests"], m["successes"], len(m["days"]), m["latest"][1]) for u, m in users.items()})


def _gold_counts(gold: dict[str, list[dict]]) -> tuple[dict, dict]:
    daily = {(r["event_date"], r["direction"]): (r["requests"], r["successes"], r["failures"], r["unique_users"])
             for r in gold[GOLD_DAILY_CONVERSION_METRICS.identifier]}
    users = {r["user_id"]: (r["requests"], r["successes"], r["active_days"], r["current_plan"])
             for r in gold[GOLD_USER_ACTIVITY_SUMMARY.identifier]}
    return daily, users


def _watermarks(settings) -> dict[str, int | None]:
    catalog = open_catalog(settings, "serving")
    return {spec.identifier: upstream_snapshot(catalog.load_table(spec.identifier), SILVER_FACT_CONVERSIONS.identifier)
            for spec in GOLD_TABLES}


@dataclass(frozen=True)
class Lake:
    settings: object
    folder: Path  # catalog.db and warehouse/ of the lakehouse the tests crash
    template: Path  # a copy of it just before the build under test
    built: dict  # gold's watermarks after the first build
    head: int  # silver facts snapshot of the second promotion
    clean: dict  # gold after an uninterrupted build from the template


@pytest.fixture(scope="module")
def lake(stack_settings, tmp_path_factory):
    """A private lakehouse at a fixed path (its catalog holds absolute file paths): two silver
    promotions, gold built after the first. A copy of it is kept, each test starts from that copy,
    and the gold of an uninterrupted build from it is the clean result."""
    root = tmp_path_factory.mktemp("gold-crash")
    folder, template = root / "lake", root / "template"
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
            patch.delenv(key)
        for key, value in private_env(folder).items():
            patch.setenv(key, value)
        settings = load_settings()
        (folder / "warehouse").mkdir(parents=True)
        ensure_namespaces(open_catalog(settings, "admin"), settings)
        land_in_bronze(settings, FIRST)
        _silver(settings)
        _gold(settings)
        built = _watermarks(settings)
        land_in_bronze(settings, SECOND)
        _silver(settings)
        head = open_catalog(settings, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier).current_snapshot().snapshot_id
        shutil.copytree(folder, template)
        report = _gold(settings)
        assert report["silver_to"] == head and set(report["committed"]) == {t.identifier for t in GOLD_TABLES}
        yield Lake(settings, folder, template, built, head, snapshot_of_gold(settings))


def _restore(lake: Lake) -> None:
    """The lakehouse as it was before the build under test (a new catalog connection sees it)."""
    shutil.rmtree(lake.folder)
    shutil.copytree(lake.template, lake.folder)


def test_the_clean_build_matches_the_produced_events(lake):
    assert _gold_counts(lake.clean) == _truth()


@pytest.mark.parametrize("point", ["planned", "conversion-metrics-committed", "daily-committed", "summary-committed"])
def test_sigkill_during_gold_then_rerun_equals_a_clean_build(lake, point):
    _restore(lake)
    settings = lake.settings
    assert set(_watermarks(settings).values()) == set(lake.built.values())  # the state before the build
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}, **private_env(lake.folder)}
    crashed = subprocess.run([sys.executable, "-m", "flows.cli", "run", "gold", "--crash-at", point],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert crashed.returncode == -9, crashed.stderr[-3000:]

    # the kill landed where it was meant to: which gold tables reached the new silver snapshot
    after_crash = _watermarks(settings)
    moved = {name for name, mark in after_crash.items() if mark == lake.head}
    assert all(mark in (lake.head, lake.built[name]) for name, mark in after_crash.items())
    summary = GOLD_USER_ACTIVITY_SUMMARY.identifier
    if point == "planned":
        assert not moved
    elif point == "conversion-metrics-committed":
        assert GOLD_DAILY_CONVERSION_METRICS.identifier in moved and summary not in moved
    elif point == "daily-committed":
        assert {s.identifier for s in DAILY} <= moved and summary not in moved
    else:
        assert {s.identifier for s in DAILY} | {summary} <= moved

    rerun = _gold(settings)
    left = {t.identifier for t in GOLD_TABLES} - moved
    assert set(rerun["committed"]) == left  # finishes what the killed build left, repeats nothing
    assert rerun["silver_to"] == (lake.head if left else None)
    assert set(_watermarks(settings).values()) == {lake.head}

    gold = snapshot_of_gold(settings)
    assert _gold_counts(gold) == _truth()
    for table in lake.clean:
        assert gold[table] == lake.clean[table], f"{table} differs from the gold of an uninterrupted build"
    assert _gold(settings)["committed"] == {}  # nothing left to do
    from tasks.catalog import open_catalog
    from tasks.verify import verify

    reconciled = verify(open_catalog(settings, "serving"), settings)
    assert reconciled.ok, reconciled.first_failure
