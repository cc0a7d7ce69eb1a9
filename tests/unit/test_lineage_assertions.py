"""The data-quality assertions facet of the lineage events, built from hand-made audit.dq_results
rows: one assertion per row, the column only where the expectation judges one schema column, on
the output dataset the rows checked and no other."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import pytest

from tasks.lineage.assertions import assertions_facet, checked_columns, run_ids, with_assertions
from tasks.lineage.events import RunFacts, TableState, build_event

TASK_RUNS = ("0193a3c4-0000-7000-8000-000000000011", "0193a3c4-0000-7000-8000-000000000012")
WHEN = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
FACTS = TableState("silver.fact_conversions", "s3://lakehouse-silver/fact_conversions", 11,
                   (("event_id", "string"), ("latency_ms", "int"), ("success", "boolean")))
USERS = TableState("silver.dim_users", "s3://lakehouse-silver/dim_users", 12, (("user_id", "string"),))
COLUMNS = {("silver_fact_conversions", "event_id_unique"): ("event_id",),
           ("silver_fact_conversions", "success_consistent"): ("success_consistent",),  # a derived view column
           ("silver_fact_conversions", "latency_ms_in_range"): ("latency_ms",),
           ("gold_daily_conversion_metrics", "requests_equal_recount"): ("requests", "recount_requests")}


@pytest.fixture(autouse=True)
def no_lakehouse_env(monkeypatch):
    """Nothing here reads settings; keep it so whatever the caller exported (`make test`)."""
    import os

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)


def row(expectation: str, success: bool, *, run_id: str = "r1", table: str = "silver.fact_conversions",
        suite: str = "silver_fact_conversions", kind: str = "expect_column_values_to_be_unique", severity: str = "fail",
        observed: str = "0 unexpected", unexpected: int = 0) -> dict:
    return {"run_id": run_id, "flow": "promote-silver", "table_name": table, "snapshot_id": 5, "suite": suite,
            "expectation": expectation, "expectation_type": kind, "severity": severity, "success": success,
            "observed_value": observed, "element_count": 4, "unexpected_count": unexpected,
            "unexpected_percent": 25.0 * unexpected, "evaluated_at": WHEN}


def test_one_assertion_per_row_with_the_column_only_where_it_is_a_schema_column():
    rows = [row("latency_ms_in_range", False, kind="expect_column_values_to_be_between", severity="warn",
                observed="1 unexpected, e.g. [70000]", unexpected=1),
            row("event_id_unique", True),
            row("success_consistent", True, kind="expect_column_values_to_be_in_set", severity="quarantine")]
    facet = assertions_facet(rows, COLUMNS, {"event_id", "latency_ms", "success"})
    got = [(a.name, a.assertion, a.success, a.column, a.severity, a.actual) for a in facet.assertions]
    # ordered by expectation name within one run and time
    assert got == [
        ("event_id_unique", "expect_column_values_to_be_unique", True, "event_id", "fail", "0 unexpected"),
        ("latency_ms_in_range", "expect_column_values_to_be_between", False, "latency_ms", "warn",
         "1 unexpected, e.g. [70000]"),
        ("success_consistent", "expect_column_values_to_be_in_set", True, None, "quarantine", "0 unexpected"),
    ]
    latency = facet.assertions[1]
    assert latency.params == {"suite": "silver_fact_conversions", "run_id": "r1", "columns": ["latency_ms"],
                              "element_count": 4, "unexpected_count": 1}
    assert facet.assertions[2].params["columns"] == ["success_consistent"]


def test_a_pair_expectation_and_one_not_in_the_suites_have_no_column():
    rows = [row("requests_equal_recount", True, table="gold.daily_conversion_metrics",
                suite="gold_daily_conversion_metrics", kind="expect_column_pair_values_to_be_equal"),
            row("renamed_since", False, severity="warn")]
    facet = assertions_facet(rows, COLUMNS, {"requests", "recount_requests"})
    # ordered by suite name: gold_daily_... before silver_...
    assert [(a.name, a.column) for a in facet.assertions] == [("requests_equal_recount", None), ("renamed_since", None)]
    assert facet.assertions[0].params["columns"] == ["requests", "recount_requests"]
    assert assertions_facet([], COLUMNS, {"requests"}) is None


def test_the_facet_goes_on_the_output_it_checked_and_into_the_event():
    runs = [RunFacts("promote-silver.silver.fact_conversions", TASK_RUNS[0], outputs=(FACTS,)),
            RunFacts("promote-silver.silver.dim_users", TASK_RUNS[1], outputs=(USERS,))]
    rows = [row("event_id_unique", True, run_id="a"), row("event_id_unique", False, run_id="b", unexpected=2)]
    facts_run, users_run = with_assertions(runs, rows, COLUMNS)
    assert users_run == runs[1]  # no rows checked dim_users: untouched
    event = build_event("COMPLETE", facts_run, "lakehouse", "iceberg+sqlite://lakehouse", when=WHEN)
    [out] = event["outputs"]
    facet = out["facets"]["dataQualityAssertions"]
    assert facet["_schemaURL"].endswith("DataQualityAssertionsDatasetFacet")
    assert [(a["name"], a["success"], a["column"], a["params"]["run_id"]) for a in facet["assertions"]] == [
        ("event_id_unique", True, "event_id", "a"), ("event_id_unique", False, "event_id", "b")]
    plain = build_event("COMPLETE", users_run, "lakehouse", "iceberg+sqlite://lakehouse", when=WHEN)
    assert "dataQualityAssertions" not in plain["outputs"][0]["facets"]


def test_run_ids_of_a_report_and_the_columns_of_suite_kwargs():
    silver = {"run_id": "b2", "batches": [{"run_id": "b1"}, {"run_id": "b2"}], "committed": {}}
    assert run_ids(silver) == ["b1", "b2"]
    assert run_ids({"run_id": "g1", "committed": {}}) == ["g1"]
    assert run_ids({"run_id": "i1", "batches": 3, "total_records": 9}) == ["i1"]  # ingest counts its batches
    assert run_ids({"dry_run": False, "tables": {}}) == [] and run_ids(None) == []
    assert checked_columns({"column": "latency_ms", "min_value": 0}) == ("latency_ms",)
    assert checked_columns({"column_A": "p95", "column_B": "p50", "or_equal": True}) == ("p95", "p50")
    assert checked_columns({"min_ratio": 0.0}) == ()


def test_a_lineage_flow_validates_parameters_of_types_the_lineage_module_does_not_import():
    """replay's ``since: datetime``: Prefect resolves string annotations in the wrapper's module."""
    from prefect import flow

    from tasks.lineage.run import emits_lineage

    @flow(name="a-flow")
    @emits_lineage("a-flow", "silver")
    def dated(since: Optional[datetime] = None, settings=None) -> dict:
        return {}

    assert dated.validate_parameters({"since": "2026-11-30T12:00:00+00:00"})["since"] == WHEN
