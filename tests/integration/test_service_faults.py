"""The fault matrix's service faults (SeaweedFS, the Iceberg REST catalog, the Prefect server; Ray's
are in test_ray_faults.py): a real service of the stack goes away at a precise point of a
running flow, comes back, and the chain is rerun. Bronze and silver must then hold exactly what a
run without the fault gives: every produced record once in bronze, silver equal to the silver of
a clean lakehouse fed the same records, and `verify` green.

The fault is injected through the flows' named points (``crash_if``, which the SIGKILL tests use
to kill the flow itself): here the same point stops a service instead, in-process.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone

import pytest

from infra.stack import Stack
from tasks.catalog import open_catalog
from tasks.simulator import TrafficProfile, produce
from tasks.tables import SILVER_CONVERSION_EVENTS_REJECTED, SILVER_DIM_USERS, SILVER_FACT_CONVERSIONS
from tests.integration.private_lakehouse import s3_lake
from tests.integration.test_ingest_exactly_once import assert_exactly_once

pytestmark = pytest.mark.stack
RECENT = datetime.now(timezone.utc)


@pytest.fixture
def stack(stack_settings):
    """The stack, with whatever a test stopped back for the next one."""
    yield Stack(stack_settings)
    Stack(stack_settings).up()


@pytest.fixture
def lake(stack_settings, stack, tmp_path):
    """A private lakehouse on the stack's services: its own SQLite catalog, buckets and topic."""
    return s3_lake(stack_settings, tmp_path, "faults", f"it-svc-{uuid.uuid4().hex[:8]}")


def _fault_at(monkeypatch, module, point: str, action) -> list[str]:
    """Run ``action`` (once) when the flow in ``module`` reaches ``point``; returns a log."""
    fired: list[str] = []

    def at(stage: str, crash_at: str | None) -> None:
        if stage == point and not fired:
            fired.append(stage)
            action()

    monkeypatch.setattr(module, "crash_if", at)
    return fired


def _down_then_up(stack: Stack, service: str, seconds: float):
    def act():
        stack.down([service])
        threading.Timer(seconds, lambda: stack.up([service])).start()
    return act


def _silver_state(settings) -> dict:
    catalog = open_catalog(settings, "serving")
    facts = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).scan(
        selected_fields=("event_id", "source_topic", "source_partition", "source_offset")).to_arrow().to_pylist()
    rejected = catalog.load_table(SILVER_CONVERSION_EVENTS_REJECTED.identifier).scan(
        selected_fields=("source_partition", "source_offset")).to_arrow().to_pylist()
    users = catalog.load_table(SILVER_DIM_USERS.identifier).scan(
        selected_fields=("user_id", "user_plan", "valid_from")).to_arrow().to_pylist()
    key = lambda r: repr(sorted(r.items()))  # noqa: E731
    return {"facts": sorted((f["event_id"], f["source_partition"], f["source_offset"]) for f in facts),
            "rejected": sorted(map(key, rejected)), "users": sorted(map(key, users))}


def _verified(settings) -> None:
    from tasks.verify import verify

    report = verify(open_catalog(settings, "serving"), settings)
    assert report.ok, report.first_failure


def _run_through(run) -> None:
    """Run a flow through the fault: it may fail (a store that went away) or finish (a Prefect
    server that came back in time); either way the rerun must leave the tables right."""
    try:
        run()
    except Exception:  # noqa: BLE001 - the outcome is judged by the tables, below
        pass


@pytest.mark.parametrize("service,point", [("seaweedfs", "files-written"), ("prefect", "files-written")])
def test_storage_or_prefect_gone_during_an_ingest_commit(lake, stack_settings, monkeypatch, service, point):
    import flows.ingest as ingest

    settings = lake
    stack = Stack(stack_settings)
    sent = produce(settings, TrafficProfile(events=2000, seed=31, end=RECENT))
    fired = _fault_at(monkeypatch, ingest, point, _down_then_up(stack, service, 3.0))
    _run_through(lambda: ingest.ingest_flow(settings=settings, max_records=800))
    assert fired == [point]
    monkeypatch.undo()
    stack.up([service])
    report = ingest.ingest_flow(settings=settings, max_batches=50)
    assert report["lag_left"] == 0
    assert_exactly_once(settings, sent.events)


def test_rest_catalog_gone_during_an_ingest_commit(private_stack, monkeypatch):
    """The lakehouse's own REST catalog process stopped with the batch's files written, started
    again after the run gave up."""
    import flows.ingest as ingest
    from tests.integration.conftest import start_private_catalog, stop_private_catalog

    sent = produce(private_stack, TrafficProfile(events=2000, seed=33, end=RECENT))

    fired = _fault_at(monkeypatch, ingest, "files-written", lambda: stop_private_catalog(private_stack))
    _run_through(lambda: ingest.ingest_flow(settings=private_stack, max_records=800))
    assert fired == ["files-written"]
    monkeypatch.undo()
    start_private_catalog(private_stack)
    assert ingest.ingest_flow(settings=private_stack, max_batches=50)["lag_left"] == 0
    assert_exactly_once(private_stack, sent.events)
    _verified(private_stack)


@pytest.fixture(scope="module")
def silver_clean(stack_settings, tmp_path_factory):
    """One topic of known records for both silver cases, and the silver a clean lakehouse makes of
    it (computed once: it does not depend on the case)."""
    from flows.ingest import ingest_flow
    from flows.silver import silver_flow

    topic = f"it-svc-{uuid.uuid4().hex[:8]}"
    clean = s3_lake(stack_settings, tmp_path_factory.mktemp("svcclean"), "faults-clean", topic)
    sent = produce(clean, TrafficProfile(events=3000, seed=41, duplicate_rate=0.05, malformed_rate=0.02,
                                         late_rate=0.02, end=RECENT))
    assert ingest_flow(settings=clean, max_batches=50)["lag_left"] == 0
    silver_flow(settings=clean)
    return topic, sent.events, _silver_state(clean)


@pytest.mark.parametrize("service,point", [("seaweedfs", "rejected-committed"), ("prefect", "rejected-committed")])
def test_storage_or_prefect_gone_during_a_silver_promotion(silver_clean, stack, stack_settings, tmp_path, monkeypatch,
                                                           service, point):
    from flows.ingest import ingest_flow
    import flows.silver as silver

    topic, events, clean_state = silver_clean
    lake = s3_lake(stack_settings, tmp_path, "faults", topic)
    assert ingest_flow(settings=lake, max_batches=50)["lag_left"] == 0
    fired = _fault_at(monkeypatch, silver, point, _down_then_up(stack, service, 3.0))
    _run_through(lambda: silver.silver_flow(settings=lake))
    assert fired == [point]
    monkeypatch.undo()
    stack.up([service])
    silver.silver_flow(settings=lake)
    assert _silver_state(lake) == clean_state
    assert len(clean_state["facts"]) <= events
    _verified(lake)


def test_prefect_restarted_during_a_gold_build(lake, stack_settings, tmp_path, monkeypatch):
    """The Prefect server stopped once gold's daily tables committed (its locks, task states and
    events go through it) and back 3 s later; the rerun finishes the build, equal to a clean one."""
    from flows.ingest import ingest_flow
    from flows.silver import silver_flow
    import flows.gold as gold
    from tests.integration.test_gold_incremental import snapshot_of_gold

    clean = s3_lake(stack_settings, tmp_path, "faults-clean", lake.kafka_topic)
    produce(lake, TrafficProfile(events=2000, seed=43, duplicate_rate=0.03, late_rate=0.03, end=RECENT))
    for settings in (lake, clean):
        assert ingest_flow(settings=settings, max_batches=50)["lag_left"] == 0
        silver_flow(settings=settings)
    fired = _fault_at(monkeypatch, gold, "daily-committed", _down_then_up(Stack(stack_settings), "prefect", 3.0))
    _run_through(lambda: gold.gold_flow(settings=lake))
    assert fired == ["daily-committed"]
    monkeypatch.undo()
    Stack(stack_settings).up(["prefect"])
    gold.gold_flow(settings=lake)
    gold.gold_flow(settings=clean)
    assert snapshot_of_gold(lake) == snapshot_of_gold(clean)
    _verified(lake)

