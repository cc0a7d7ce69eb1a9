"""Gold reads facts and dim_users of one silver promotion, whenever it runs.

Silver commits rejected → facts → users. A gold run that lands between those commits (forced
here by a silver run SIGKILLed after each of them) must not join new facts to an old dimension
and then move its watermark past them. After the normal chain resumes, gold equals the gold of
a lakehouse that never saw the crash, row for row, and its plan metrics equal a recount in
plain Python of the events the test produced.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from tasks.catalog import ensure_namespaces, open_catalog
from tasks.tables import GOLD_DAILY_PLAN_METRICS
from tests.conftest import ROOT
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event, private_env
from tests.integration.test_gold_incremental import snapshot_of_gold

pytestmark = pytest.mark.stack

FIRST = [make_event(1, user="u-a", plan="free", occurred=NOW - timedelta(hours=5)),
         make_event(2, user="u-b", plan="free", occurred=NOW - timedelta(hours=5))]
# new users, and a plan change of u-a: only a gold that reads the matching dim_users gets them right
SECOND = [make_event(3, user="u-c", plan="pro", occurred=NOW - timedelta(hours=2)),
          make_event(4, user="u-d", plan="enterprise", occurred=NOW - timedelta(hours=2)),
          make_event(5, user="u-a", plan="pro", occurred=NOW - timedelta(hours=1)),
          make_event(6, user="u-a", plan="pro", occurred=NOW - timedelta(minutes=30)), b"not json"]


def _gold(settings) -> dict:
    from flows.gold import gold_flow

    return gold_flow(settings=settings)


def _silver(settings) -> dict:
    from flows.silver import silver_flow

    return silver_flow(settings=settings)


def _plan_metrics_truth() -> dict[tuple, int]:
    """requests per (day, plan) from the produced events: the plan of each event's own version."""
    import json

    truth: dict[tuple, int] = {}
    for raw in FIRST + SECOND:
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        day = event["occurred_at"][:10]
        truth[(day, event["user_plan"])] = truth.get((day, event["user_plan"]), 0) + 1
    return truth


def _plan_metrics(settings) -> dict[tuple, int]:
    rows = open_catalog(settings, "serving").load_table(GOLD_DAILY_PLAN_METRICS.identifier).scan().to_arrow().to_pylist()
    return {(r["event_date"].isoformat(), r["user_plan"]): r["requests"] for r in rows}


@pytest.mark.parametrize("point", ["rejected-committed", "facts-committed"])
def test_gold_between_silver_commits_then_the_chain_equals_a_clean_run(private, tmp_path, point):
    clean_dir = tmp_path / "clean"
    (clean_dir / "warehouse").mkdir(parents=True)
    clean = private.model_copy(update={"catalog_uri": f"sqlite:///{clean_dir / 'catalog.db'}",
                                       "warehouse": (clean_dir / "warehouse").as_uri()})
    ensure_namespaces(open_catalog(clean, "admin"), clean)
    for lake in (private, clean):
        land_in_bronze(lake, FIRST)
        _silver(lake)
        _gold(lake)
        land_in_bronze(lake, SECOND)

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}, **private_env(tmp_path)}
    crashed = subprocess.run([sys.executable, "-m", "flows.cli", "run", "silver", "--crash-at", point],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    _gold(private)  # lands between silver's commits
    _silver(private)  # finishes the interrupted promotion
    _gold(private)

    _silver(clean)
    _gold(clean)
    assert _plan_metrics(clean) == _plan_metrics_truth()
    assert _plan_metrics(private) == _plan_metrics_truth()
    assert snapshot_of_gold(private) == snapshot_of_gold(clean)
    from tasks.verify import verify

    reconciled = verify(open_catalog(private, "serving"), private)
    assert reconciled.ok, reconciled.first_failure
