"""Gold built incrementally equals a full rebuild from silver, row for row, after random sequences of
ingests, promotions and builds with late events, out-of-order plan changes and duplicates."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tasks.catalog import open_catalog
from tasks.tables import (
    GOLD_DAILY_CONVERSION_METRICS,
    GOLD_TABLES,
    GOLD_USER_ACTIVITY_SUMMARY,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
)
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event

pytestmark = pytest.mark.stack


def run_silver_and_gold(settings, full: bool = False) -> dict:
    from flows.gold import gold_flow
    from flows.silver import silver_flow

    silver_flow(settings=settings)
    return gold_flow(full=full, settings=settings)


def snapshot_of_gold(settings) -> dict[str, list[dict]]:
    """Every gold table's rows in a canonical order (floats rounded: sums may reassociate)."""
    catalog = open_catalog(settings, "serving")
    out = {}
    for spec in GOLD_TABLES:
        rows = catalog.load_table(spec.identifier).scan().to_arrow().to_pylist()
        canon = [{k: round(v, 9) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
        out[spec.identifier] = sorted(canon, key=lambda r: repr(sorted(r.items(), key=lambda kv: kv[0])))
    return out


def summary_in_plain_python(settings) -> list[dict]:
    """gold.user_activity_summary computed straight from silver's rows, without Daft and without
    gold.user_daily_activity, which both builds aggregate the summary from."""
    catalog = open_catalog(settings, "serving")
    facts = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).scan().to_arrow().to_pylist()
    current = {r["user_id"]: r for r in catalog.load_table(SILVER_DIM_USERS.identifier).scan().to_arrow().to_pylist()
               if r["is_current"]}
    users: dict[str, list[dict]] = {}
    for fact in facts:
        if fact["user_id"] is not None:
            users.setdefault(fact["user_id"], []).append(fact)
    rows = []
    for user, mine in users.items():
        successes = sum(1 for f in mine if f["success"])
        rows.append({
            "user_id": user, "first_seen_at": min(f["occurred_at"] for f in mine),
            "last_seen_at": max(f["occurred_at"] for f in mine), "requests": len(mine), "successes": successes,
            "failures": len(mine) - successes, "active_days": len({f["event_date"] for f in mine}),
            "to_roman_requests": sum(1 for f in mine if f["direction"] == "to_roman"),
            "from_roman_requests": sum(1 for f in mine if f["direction"] == "from_roman"),
            "current_plan": current[user]["user_plan"] if user in current else None,
            "current_country": current[user]["user_country"] if user in current else None,
        })
    return sorted(rows, key=lambda r: r["user_id"])


def random_batch(rng: random.Random, next_id: list[int], sent: list[bytes]) -> list[bytes]:
    batch = []
    for _ in range(rng.randint(3, 12)):
        roll = rng.random()
        if roll < 0.15 and sent:  # a duplicate of anything sent before
            batch.append(rng.choice(sent))
            continue
        next_id[0] += 1
        days_back = rng.choice([0, 0, 0, 1, 2, 10])  # late events for old days
        occurred = NOW - timedelta(days=days_back, minutes=rng.randint(1, 600))
        user = rng.choice(["u-1", "u-2", "u-3", None])
        value = make_event(
            next_id[0], occurred=occurred, user=user, plan=rng.choice(["free", "pro", "enterprise"]),
            latency_ms=round(rng.uniform(0.5, 40), 2),
            **({"success": False, "output": None, "error_code": "OUT_OF_RANGE", "http_status": 422, "input": "5000"}
               if rng.random() < 0.2 else {}),
        )
        batch.append(value)
        sent.append(value)
    if rng.random() < 0.2:
        batch.append(b"{broken")
    return batch


@pytest.mark.parametrize("seed", [1, 2])
def test_incremental_builds_equal_a_full_rebuild(private, seed):
    rng = random.Random(seed)
    next_id, sent = [seed * 1000], []
    for step in range(4):
        land_in_bronze(private, random_batch(rng, next_id, sent), at=NOW + timedelta(minutes=step))
        if rng.random() < 0.7:  # sometimes several bronze commits pile up before a promotion
            run_silver_and_gold(private)
    run_silver_and_gold(private)
    incremental = snapshot_of_gold(private)
    report = run_silver_and_gold(private, full=True)
    assert report["full"] and report["committed"]
    full = snapshot_of_gold(private)
    for table in incremental:
        assert incremental[table] == full[table], f"{table} differs from a full rebuild"
    summary = sorted(incremental[GOLD_USER_ACTIVITY_SUMMARY.identifier], key=lambda r: r["user_id"])
    assert summary == summary_in_plain_python(private)


def test_a_late_event_ten_days_back_changes_only_its_day_and_its_user(private):
    land_in_bronze(private, [make_event(i, occurred=NOW - timedelta(days=d, hours=1), user=u)
                             for i, (d, u) in enumerate([(0, "u-1"), (1, "u-2"), (10, "u-2"), (3, "u-3")], start=1)])
    run_silver_and_gold(private)
    before = snapshot_of_gold(private)
    late_day = (NOW - timedelta(days=10, hours=5)).date()
    land_in_bronze(private, [make_event(99, occurred=NOW - timedelta(days=10, hours=5), user="u-3")])
    report = run_silver_and_gold(private)
    assert report["days"] == 1 and report["users"] == 1
    after = snapshot_of_gold(private)
    daily = GOLD_DAILY_CONVERSION_METRICS.identifier
    changed = [r for r in after[daily] if r not in before[daily]]
    assert changed and {r["event_date"] for r in changed} == {late_day}
    assert [r for r in before[daily] if r["event_date"] != late_day] == [r for r in after[daily] if r["event_date"] != late_day]
    summary = GOLD_USER_ACTIVITY_SUMMARY.identifier
    changed_users = {r["user_id"] for r in after[summary] if r not in before[summary]}
    assert changed_users == {"u-3"}
