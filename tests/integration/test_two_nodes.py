"""Silver and gold spread over two Ray nodes and give the one-node result.

A second Ray node starts on this machine, joined to the stack's head with one CPU, a 200 MB object
store and a resource of its own (``second_ray_node``). A private lakehouse promoted and built with
``compute_partitions=4`` while it is up must run Daft work on both nodes (the CPU time of this
test's Daft worker actors grows on each), and its silver and gold must equal, cell for cell, those
of a private lakehouse fed the same records on the head alone with one partition (today's path).
The node then leaves; the head stays healthy.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from tasks.catalog import open_catalog
from tasks.tables import (
    GOLD_TABLES,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
)
from tests.integration.conftest import open_private_lakehouse
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event
from tests.integration.second_ray_node import alive_nodes, cpu_spent_by_node, daft_workers_cpu, second_node

pytestmark = pytest.mark.stack

PARTITIONS = 4
TABLES = (SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS, SILVER_DIM_USERS, *GOLD_TABLES)
PER_LAKEHOUSE = ("bronze_snapshot_id",)  # bronze's snapshot ids are each catalog's own


def records(seed: int = 5) -> list[bytes | None]:
    """600 events of 8 users over four days with plan changes, a tenth sent twice, and junk."""
    rng = random.Random(seed)
    sent = []
    for n in range(600):
        user = rng.choice([f"u-{i}" for i in range(8)] + [None])
        sent.append(make_event(
            n + 1, occurred=NOW - timedelta(days=rng.randint(0, 3), minutes=rng.randint(1, 900)), user=user,
            plan=rng.choice(["free", "pro", "enterprise"]), latency_ms=round(rng.uniform(0.5, 40), 2),
            **({"success": False, "output": None, "error_code": "OUT_OF_RANGE", "http_status": 422, "input": "5000"}
               if rng.random() < 0.2 else {})))
    values: list[bytes | None] = sent + [rng.choice(sent) for _ in range(60)] + [b"{broken", None]
    rng.shuffle(values)
    return values


def tables_of(settings) -> dict[str, list]:
    """Every silver and gold table's rows, sorted, floats rounded (sums may reassociate)."""
    catalog = open_catalog(settings, "serving")
    out = {}
    for spec in TABLES:
        rows = catalog.load_table(spec.identifier).scan().to_arrow().to_pylist()
        canon = [tuple(sorted((k, round(v, 9) if isinstance(v, float) else v)
                              for k, v in r.items() if k not in PER_LAKEHOUSE)) for r in rows]
        out[spec.identifier] = sorted(canon, key=repr)
    return out


def promote_and_build(settings) -> None:
    from flows.gold import gold_flow
    from flows.silver import silver_flow

    silver_flow(settings=settings)
    gold_flow(settings=settings)


def test_silver_and_gold_run_on_both_nodes_and_equal_a_one_node_run(stack_settings, tmp_path, monkeypatch):
    import ray

    from infra.services import RayHead

    values = records()
    (tmp_path / "one").mkdir()
    one = open_private_lakehouse(tmp_path / "one", monkeypatch).model_copy(update={"compute_partitions": 1})
    land_in_bronze(one, values)
    promote_and_build(one)  # joins the head: use_ray
    expected = tables_of(one)
    assert expected[SILVER_FACT_CONVERSIONS.identifier] and expected[GOLD_TABLES[1].identifier]

    job = ray.get_runtime_context().get_job_id()
    head = [i for i, n in alive_nodes().items() if n["Resources"].get("node:__internal_head__")]
    with second_node(stack_settings, tmp_path / "second-node.log") as node:
        remote = [item for item in node.listeners() if not item.loopback]
        assert node.listeners() and not remote, f"the second node listens beyond loopback: {remote}"
        (tmp_path / "two").mkdir()
        two = open_private_lakehouse(tmp_path / "two", monkeypatch).model_copy(
            update={"compute_partitions": PARTITIONS})
        land_in_bronze(two, values)
        from flows.gold import gold_flow
        from flows.silver import silver_flow

        spent = {}
        for step, run in (("silver", lambda: silver_flow(settings=two)), ("gold", lambda: gold_flow(settings=two))):
            before = daft_workers_cpu(job)
            run()
            after = daft_workers_cpu(job)
            by_node = cpu_spent_by_node(before, after)
            spent[step] = {n: by_node.get(n, 0.0) for n in (*head, node.node_id)}
        print({step: {n[:8]: round(s, 2) for n, s in by_node.items()} for step, by_node in spent.items()})
        for step, by_node in spent.items():
            assert all(seconds > 0 for seconds in by_node.values()), f"{step} did not run on both nodes: {by_node}"
        got = tables_of(two)
    for table, rows in expected.items():
        assert got[table] == rows, f"{table}: two nodes and {PARTITIONS} partitions differ from one node"
    assert node.node_id not in alive_nodes(), "the second node is still part of the cluster"
    assert set(head) <= set(alive_nodes()) and RayHead(stack_settings).check_health() is None
