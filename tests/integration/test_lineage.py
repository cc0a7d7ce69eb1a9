"""Lineage on the real stack (a private lakehouse on its Prefect and Ray): flow runs yield START
and COMPLETE (FAIL on a failing run) with the datasets and snapshot ids they read and committed;
`lakehouse lineage --where` from one gold day returns exactly the bronze offsets of that day's
events; a backend that is down never fails a run and its events arrive once it is back. The
backend is a real OpenLineage HTTP receiver on loopback, started and stopped by the test."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from unittest import mock

import pytest
import yaml
from typer.testing import CliRunner

from tasks.catalog import open_catalog
from tasks.quality.suites import GOLD_DAILY_SUITE, SILVER_FACTS_SUITE, SUITES_DIR
from tasks.tables import AUDIT_DQ_RESULTS, AUDIT_LINEAGE_EVENTS, BRONZE_CONVERSION_EVENTS_RAW, GOLD_DAILY_CONVERSION_METRICS
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event
from tests.unit.test_lineage_events import _free_port, _Receiver

pytestmark = pytest.mark.stack

BRONZE, DAILY = BRONZE_CONVERSION_EVENTS_RAW.identifier, GOLD_DAILY_CONVERSION_METRICS.identifier
FACTS = "silver.fact_conversions"


def _with_backend(settings, port: int):
    return settings.model_copy(update={"lineage_transport": "http", "lineage_url": f"http://127.0.0.1:{port}"})


def _runs(received: list, job: str) -> list[dict]:
    return [e for _, _, e in received if e["job"]["name"] == job]


def _version(datasets: list[dict], table: str) -> int:
    [found] = [d for d in datasets if d["facets"]["symlinks"]["identifiers"][0]["name"] == table]
    return int(found["facets"]["version"]["datasetVersion"])


def _assertions(output: dict) -> list[tuple]:
    """(expectation, severity, success, column) of an output's data-quality assertions facet."""
    return sorted((a["name"], a["severity"], a["success"], a.get("column"))  # None: left out by the serializer
                  for a in output["facets"]["dataQualityAssertions"]["assertions"])


def _checked(settings, audit: list[dict], run_ids: set[str], table: str) -> list[tuple]:
    """The same from audit.dq_results rows of ``run_ids``: the column is the suite file's single
    ``column`` kwarg when the table's schema has it (read here from the YAML and the catalog)."""
    suite = {SILVER_FACTS_SUITE: FACTS, GOLD_DAILY_SUITE: DAILY}
    [name] = [n for n, t in suite.items() if t == table]
    kwargs = {e["name"]: e.get("kwargs") or {} for e in yaml.safe_load((SUITES_DIR / f"{name}.yml").read_text())["expectations"]}
    schema = {f.name for f in open_catalog(settings, "serving").load_table(table).schema().fields}
    rows = [r for r in audit if r["run_id"] in run_ids and r["table_name"] == table]
    assert sorted(r["expectation"] for r in rows) == sorted(list(kwargs) * len(run_ids))  # one per expectation and run
    return sorted((r["expectation"], r["severity"], r["success"],
                   kwargs[r["expectation"]].get("column") if kwargs[r["expectation"]].get("column") in schema else None)
                  for r in rows)


def _lineage(*args: str) -> dict:
    from flows.cli import _State, app

    _State.settings = None  # read this test's private environment
    with mock.patch.dict(os.environ):
        result = CliRunner().invoke(app, ["lineage", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def _leaves(node: dict) -> list[dict]:
    return [node] if not node["children"] else [leaf for c in node["children"] for leaf in _leaves(c)]


def test_flow_runs_emit_start_complete_and_fail_and_the_walk_finds_one_days_offsets(private):
    from flows.gold import gold_flow
    from flows.silver import silver_flow
    from tasks.lineage.run import read_outputs

    day_a, day_b = NOW - timedelta(days=2), NOW - timedelta(days=1)
    # offsets 0..7 of partition 0, the days interleaved; offset 6 repeats event 1 (a duplicate: not a fact)
    days = [day_a, day_b, day_a, day_a, day_b, day_a, day_a, day_b]
    ids = [1, 2, 3, 4, 5, 6, 1, 7]
    land_in_bronze(private, [make_event(n, occurred=d) for n, d in zip(ids[:4], days[:4])])
    land_in_bronze(private, [make_event(n, occurred=d) for n, d in zip(ids[4:], days[4:])])
    day_a_offsets = [o for o, (n, d) in enumerate(zip(ids, days)) if d == day_a and ids.index(n) == o]
    assert day_a_offsets == [0, 2, 3, 5]  # worked out: 6 repeats event 1, first seen at offset 0

    receiver = _Receiver(port := _free_port())
    try:
        settings = _with_backend(private, port)
        # one bronze snapshot per batch: the COMPLETE event's statistics must add both batches' commits
        silver_state = silver_flow(settings=settings.model_copy(update={"silver_max_batch_records": 4}), return_state=True)
        silver = silver_state.result()
        gold_state = gold_flow(settings=settings, return_state=True)
        gold = gold_state.result()
        with pytest.raises(ValueError, match="crash_at"):
            gold_flow(settings=settings, crash_at="nowhere")
    finally:
        receiver.stop()
    bronze_head = open_catalog(private, "serving").load_table(BRONZE).current_snapshot().snapshot_id

    flow_silver = _runs(receiver.received, "promote-silver")
    assert [e["eventType"] for e in flow_silver] == ["START", "COMPLETE"]
    assert {e["run"]["runId"] for e in flow_silver} == {str(silver_state.state_details.flow_run_id)}
    complete = flow_silver[1]
    assert _version(complete["outputs"], FACTS) == silver["committed"][FACTS]
    assert _version(complete["inputs"], BRONZE) == bronze_head == silver["bronze_to"]
    facts_output = next(o for o in complete["outputs"] if o["name"].endswith("fact_conversions"))
    assert len(silver["batches"]) == 2
    assert facts_output["outputFacets"]["outputStatistics"]["rowCount"] == 7  # 8 records, one a repeat: 7 facts
    # the same sums from the catalog by the batches' run ids (the event takes the run's commits by time)
    from tasks.commits import RUN_ID_KEY

    batch_ids = {b["run_id"] for b in silver["batches"]}
    facts_commits = [s.summary.additional_properties for s in open_catalog(private, "serving").load_table(FACTS).snapshots()
                     if s.summary is not None and s.summary.additional_properties.get(RUN_ID_KEY) in batch_ids]
    stats = facts_output["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["size"], stats["fileCount"]) == tuple(
        sum(int(c.get(k, 0)) for c in facts_commits) for k in ("added-records", "added-files-size", "added-data-files"))
    assert stats["fileCount"] >= 2  # a file per batch at least: not the last commit's alone
    audit = open_catalog(private, "serving").load_table(AUDIT_DQ_RESULTS.identifier).scan().to_arrow().to_pylist()
    assert _assertions(facts_output) == _checked(private, audit, {b["run_id"] for b in silver["batches"]}, FACTS)

    flow_gold = _runs(receiver.received, "build-gold")
    assert [e["eventType"] for e in flow_gold] == ["START", "COMPLETE", "START", "FAIL"]
    gold_run = str(gold_state.state_details.flow_run_id)
    assert flow_gold[0]["run"]["runId"] == flow_gold[1]["run"]["runId"] == gold_run
    assert _version(flow_gold[1]["outputs"], DAILY) == gold["committed"][DAILY]
    assert _version(flow_gold[1]["inputs"], FACTS) == silver["committed"][FACTS]
    daily_output = next(o for o in flow_gold[1]["outputs"] if o["name"].endswith("daily_conversion_metrics"))
    assert _assertions(daily_output) == _checked(private, audit, {gold["run_id"]}, DAILY)
    assert "crash_at" in flow_gold[3]["run"]["facets"]["errorMessage"]["message"]
    [daily_task] = [e for e in _runs(receiver.received, f"build-gold.{DAILY}") if e["eventType"] == "COMPLETE"]
    assert daily_task["run"]["facets"]["parent"]["run"]["runId"] == gold_run
    assert "requests" in daily_task["outputs"][0]["facets"]["columnLineage"]["fields"]

    kept = open_catalog(private, "serving").load_table(AUDIT_LINEAGE_EVENTS.identifier).scan().to_arrow().to_pylist()
    assert {(r["job_name"], r["event_type"]) for r in kept if r["run_id"] == gold_run} == {
        ("build-gold", "START"), ("build-gold", "COMPLETE")}

    # bronze's Kafka ranges, as ingest's COMPLETE reports them for the commits since it started: the
    # helper's first commit has no ingest report (offsets_from) and no commit before it, so no known
    # start; the second starts at the first's next offset
    [ingest_run] = read_outputs(private, "ingest", {BRONZE: bronze_head}, 0, "ingest-bronze")
    assert [(r.topic, r.partition, r.first, r.last) for r in ingest_run.kafka_ranges] == [("t", 0, 4, 7)]
    assert ingest_run.kafka_bootstrap == private.kafka_bootstrap

    tree = _lineage(DAILY, "--where", f"event_date = '{day_a.date().isoformat()}'", "--format", "json")
    found = sorted(o for leaf in _leaves(tree) for r in leaf["ranges"] for o in range(r["first"], r["last"] + 1))
    assert found == day_a_offsets
    assert {leaf["table"] for leaf in _leaves(tree)} == {BRONZE}

    down = _lineage("--downstream", "t:0:7-7", "--format", "json")
    [bronze_node] = down["children"]
    reached = {c["table"]: c for c in bronze_node["children"]}
    assert reached[FACTS]["snapshot_id"] == silver["committed"][FACTS]
    assert {c["table"]: c["snapshot_id"] for c in reached[FACTS]["children"]}[DAILY] == gold["committed"][DAILY]


def test_a_backend_that_is_down_never_fails_a_run_and_gets_its_events_once_back(private):
    from flows.gold import gold_flow
    from flows.silver import silver_flow
    from tasks.lineage.emit import spool_path

    land_in_bronze(private, [make_event(n) for n in range(1, 4)])
    settings = _with_backend(private, port := _free_port())
    silver = silver_flow(settings=settings)  # nobody listens on the port
    assert silver["facts"] == 3
    spooled = [json.loads(line) for line in spool_path(settings).read_text().splitlines()]
    assert [(e["job"]["name"], e["eventType"]) for e in spooled if "." not in e["job"]["name"]] == [
        ("promote-silver", "START"), ("promote-silver", "COMPLETE")]

    receiver = _Receiver(port)
    try:
        gold_flow(settings=settings)
    finally:
        receiver.stop()
    names = [(e["job"]["name"], e["eventType"]) for _, _, e in receiver.received if "." not in e["job"]["name"]]
    assert names == [("promote-silver", "START"), ("promote-silver", "COMPLETE"),
                     ("build-gold", "START"), ("build-gold", "COMPLETE")]
    assert [e["run"]["runId"] for _, _, e in receiver.received[:len(spooled)]] == [e["run"]["runId"] for e in spooled]
    assert not spool_path(settings).exists()
