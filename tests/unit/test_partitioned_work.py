"""Silver's and gold's transforms over N hash partitions (``silver.spread``) give the same rows for
every N, and the same as a plain-Python recount: the partition count only spreads the work.

Daft's native runner ignores ``repartition``, so the checks run on Ray in-process, in one child
process (Daft's runner is chosen once per process, and the other unit tests use the native one).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import daft
import pytest

from tasks.roman import to_roman
from tasks.transforms import gold, silver

COUNTS = (1, 2, 3, 7)
LIMIT = 64 * 1024
T0 = datetime(2024, 12, 22, 6, tzinfo=timezone.utc)  # three days of events before the Kafka time
KAFKA_T0 = datetime(2024, 12, 26, tzinfo=timezone.utc)


def _body(n: int, rng: random.Random) -> dict:
    number = rng.randint(1, 3999)
    user = rng.choice(["u-1", "u-2", "u-3", "u-4", None])
    return {
        "event_id": str(uuid.UUID(int=n + 1)), "event_type": "conversion", "schema_version": 1,
        "occurred_at": (T0 + timedelta(minutes=rng.randint(0, 3 * 24 * 60))).isoformat().replace("+00:00", "Z"),
        "user_id": user, "user_plan": rng.choice(["free", "pro"]) if user else None,
        "user_country": rng.choice(["DE", "FR"]) if user else None,
        "direction": "to_roman", "input": str(number), "output": to_roman(number), "success": True,
        "error_code": None, "latency_ms": rng.choice([0.5, 1.25, 2.0, 7.5, 30.0]),
        "endpoint": "/v1/to-roman", "http_status": 200, "client": "web",
    }


def _records(seed: int) -> list[dict]:
    """Bronze records: 60 events, a third of them arriving two or three times (other partitions,
    offsets and timestamps, two topics), and some malformed values."""
    rng = random.Random(seed)
    bodies = [json.dumps(_body(n, rng)).encode() for n in range(60)]
    values = bodies + [rng.choice(bodies) for _ in range(30)] + [b"{broken", b""]
    rng.shuffle(values)
    return [{"topic": rng.choice(["t", "u"]), "partition": rng.randint(0, 2), "offset": i,
             "kafka_timestamp": KAFKA_T0 + timedelta(seconds=rng.randint(0, 20)), "value": v,
             "bronze_snapshot_id": 7} for i, v in enumerate(values)]


def _bronze(records: list[dict]) -> daft.DataFrame:
    return daft.from_pylist(records)


def _promote(records: list[dict], partitions: int) -> tuple[list, list, list]:
    """(facts, rejected, dim_users) as ``tasks.silver_jobs`` computes them, over ``partitions``."""
    checked = silver.spread(silver.validate(_bronze(records), LIMIT), partitions, "event_id").collect()
    candidates = silver.valid(checked)
    arrived = silver.arrivals(candidates).collect()
    drop = silver.later_copies(arrived).collect()
    facts = silver.facts(silver.without(candidates, drop)).collect()
    events = silver.spread(facts.select("user_id", "occurred_at", "event_id", "user_plan", "user_country"),
                           partitions, "user_id")
    dim = silver.user_versions(events)
    return _rows(facts), _rows(silver.rejected(checked)), _rows(dim)


def _rows(frame: daft.DataFrame) -> list:
    return sorted((tuple(sorted(r.items())) for r in frame.to_pylist()), key=repr)


def check_silver_promotion_is_the_same_for_every_partition_count(records):
    results = {n: _promote(records, n) for n in COUNTS}
    for n in COUNTS[1:]:
        assert results[n] == results[1], f"{n} partitions differ from one"


def check_dedup_over_partitions_keeps_the_first_arrival_as_plain_python_does(records):
    order = ("kafka_timestamp", "topic", "partition", "offset")
    first: dict[str, tuple] = {}
    for r in records:
        try:
            event_id = json.loads(r["value"])["event_id"]
        except ValueError:
            continue
        key = tuple(r[k] for k in order)
        first[event_id] = min(first.get(event_id, key), key)
    truth = sorted((e, k[1], k[2], k[3]) for e, k in first.items())
    for n in COUNTS:
        facts, rejected, _ = _promote(records, n)
        got = sorted((dict(f)["event_id"], dict(f)["source_topic"], dict(f)["source_partition"],
                      dict(f)["source_offset"]) for f in facts)
        assert got == truth, f"{n} partitions"
        assert len(rejected) == 2


def check_scd2_over_partitions_matches_plain_python(records):
    """Versions are maximal runs of (plan, country) per user by (occurred_at, event_id)."""
    rng = random.Random(11)
    rows = [(rng.choice(["a", "b", "c", None]), rng.randint(0, 500), f"e{i:03d}", rng.choice(["free", "pro"]), "DE")
            for i in range(80)]
    frame = daft.from_pydict({
        "user_id": [r[0] for r in rows], "occurred_at": [T0 + timedelta(minutes=r[1]) for r in rows],
        "event_id": [r[2] for r in rows], "user_plan": [r[3] for r in rows], "user_country": [r[4] for r in rows],
    })
    truth = []
    for user in {r[0] for r in rows if r[0] is not None}:
        mine = sorted((r for r in rows if r[0] == user), key=lambda r: (r[1], r[2]))
        starts = [r for i, r in enumerate(mine) if i == 0 or (r[3], r[4]) != (mine[i - 1][3], mine[i - 1][4])]
        for i, s in enumerate(starts):
            end = T0 + timedelta(minutes=starts[i + 1][1]) if i + 1 < len(starts) else None
            truth.append((user, T0 + timedelta(minutes=s[1]), end, s[3], s[4], end is None))
    for n in COUNTS:
        got = sorted((r["user_id"], r["valid_from"], r["valid_to"], r["user_plan"], r["user_country"], r["is_current"])
                     for r in silver.user_versions(silver.spread(frame, n, "user_id")).to_pylist())
        assert got == sorted(truth, key=lambda t: (t[0], t[1])), f"{n} partitions"


def check_gold_aggregates_are_the_same_for_every_partition_count(records):
    facts_rows, _, dim_rows = _promote(records, 1)
    facts = daft.from_pylist([dict(r) for r in facts_rows])
    dim = daft.from_pylist([dict(r) for r in dim_rows])

    def build(n: int) -> dict[str, list]:
        return {
            "daily": _rows(gold.daily_conversion_metrics(facts, n)),
            "plan": _rows(gold.daily_plan_metrics(facts, dim, n)),
            "hourly": _rows(gold.hourly_api_usage(facts, n)),
            "activity": _rows(gold.user_daily_activity(facts, n)),
            "summary": _rows(gold.user_activity_summary(facts, dim, n)),
        }

    one = build(1)
    for n in COUNTS[1:]:
        assert build(n) == one, f"{n} partitions differ from one"
    # requests per day, recounted in plain Python
    per_day: dict = {}
    for r in (dict(r) for r in facts_rows):
        per_day[r["event_date"]] = per_day.get(r["event_date"], 0) + 1
    assert {dict(r)["event_date"]: dict(r)["requests"] for r in one["daily"]} == per_day


def check_spread_makes_that_many_partitions(records):
    checked = silver.spread(silver.validate(_bronze(records), LIMIT), 3, "event_id").collect()
    assert len(list(checked.iter_partitions())) == 3  # num_partitions() says 0 once collected on Ray


CHECKS = [name for name in dir() if name.startswith("check_")]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, str]:
    """Every check's outcome ("ok" or its error), from one child process on Ray in-process."""
    folder = tmp_path_factory.mktemp("partitioned")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "tests.unit.test_partitioned_work", str(folder)],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((folder / "outcomes.json").read_text())


@pytest.mark.parametrize("check", CHECKS)
def test_partitioned(outcomes, check):
    assert outcomes[check] == "ok", outcomes[check]


def _run_checks(folder: Path) -> None:
    import traceback

    from tasks.compute import use_ray
    from tasks.settings import load_settings

    settings = load_settings(None, state_dir=str(folder / "state"), ray_object_store_mb=256)
    assert use_ray(settings) == "ray:in-process"
    records = _records(seed=3)
    outcomes = {}
    for name in CHECKS:
        try:
            globals()[name](records)
            outcomes[name] = "ok"
        except Exception:  # noqa: BLE001 - reported to the parent test, which fails on it
            outcomes[name] = traceback.format_exc()
    (folder / "outcomes.json").write_text(json.dumps(outcomes))


if __name__ == "__main__":
    _run_checks(Path(sys.argv[1]))
