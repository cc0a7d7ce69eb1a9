"""Data quality on tiny batches: every expectation of the repository's suites passing and failing
(truth written by hand per case), the severities, the quarantine split, the volume baseline and the
gold recount. GX runs in memory; no catalog, no Prefect."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from tasks.quality import results, runner, views
from tasks.quality.suites import (
    GOLD_DAILY_SUITE, SILVER_FACTS_SUITE, SUITES_DIR, check_override_names, load_suite, parse_suite, with_severities,
)
from tasks.settings import SettingsError, load_settings
from tasks.tables import SILVER_CONVERSION_EVENTS_REJECTED

@pytest.fixture(autouse=True)
def embedded_settings(monkeypatch):
    """The settings these tests load are the embedded defaults, whatever the caller exported
    (`make test` exports LAKEHOUSE_CONFIG for the stack tiers)."""
    import os

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)


NOW = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)


def fact(i: int, **overrides) -> dict:
    row = {
        "event_id": f"e-{i}", "occurred_at": NOW - timedelta(minutes=i), "user_id": f"u-{i}", "user_plan": "pro",
        "user_country": "DE", "direction": "to_roman", "success": True, "error_code": None, "latency_ms": 10.0 + i,
        "endpoint": "/v1/to-roman", "http_status": 200, "source_topic": "t", "source_partition": 0,
        "source_offset": 100 + i, "kafka_timestamp": NOW, "bronze_snapshot_id": 7,
    }
    row.update(overrides)
    return row


FACT_TYPES = {
    "occurred_at": pa.timestamp("us", "UTC"), "kafka_timestamp": pa.timestamp("us", "UTC"), "http_status": pa.int32(),
    "latency_ms": pa.float64(), "success": pa.bool_(), "error_code": pa.string(), "user_plan": pa.string(),
    "user_country": pa.string(), "source_partition": pa.int32(), "source_offset": pa.int64(),
    "bronze_snapshot_id": pa.int64(),
}


def facts_table(rows: list[dict]) -> pa.Table:
    names = list(rows[0])
    return pa.table({n: pa.array([r[n] for r in rows], FACT_TYPES.get(n, pa.string())) for n in names})


@pytest.fixture(scope="module")
def suite():
    return parse_suite((SUITES_DIR / f"{SILVER_FACTS_SUITE}.yml").read_text(), "silver suite")


def run(suite, rows: list[dict], baseline: float | None = None) -> dict[str, runner.Outcome]:
    table = facts_table(rows)
    return {o.expectation: o for o in runner.evaluate(suite, views.fact_view(table, suite.columns(), NOW), baseline)}


CLEAN = [fact(i) for i in range(4)]


def test_a_clean_batch_meets_every_expectation(suite):
    outcomes = run(suite, CLEAN, baseline=4.0)
    assert [name for name, o in outcomes.items() if not o.success] == []
    assert list(outcomes) == [e.name for e in suite.expectations]  # one outcome each, in suite order
    assert outcomes["batch_success_rate"].observed_value == "1.0"
    assert outcomes["batch_volume"].observed_value == "4"


# (expectation, the row-2 change that breaks it): each fails on exactly row 2
ROW_CASES = [
    ("event_id_not_null", {"event_id": None}),
    ("occurred_at_not_null", {"occurred_at": None}),
    ("success_not_null", {"success": None}),
    ("latency_ms_not_null", {"latency_ms": None}),
    ("http_status_not_null", {"http_status": None}),
    ("direction_in_set", {"direction": "sideways"}),
    ("endpoint_in_set", {"endpoint": "/v2/to-roman"}),
    ("user_plan_in_set", {"user_plan": "platinum"}),
    ("user_country_in_set", {"user_country": "ZZ"}),
    ("latency_ms_in_range", {"latency_ms": 60000.5}),  # and a p95 of four rows is that value
    ("success_consistent", {"error_code": "INVALID_NUMERAL"}),  # success with an error code
    ("success_consistent", {"success": False, "error_code": "OUT_OF_RANGE", "http_status": 200}),  # failure answered 200
    ("occurred_at_not_in_future", {"occurred_at": NOW + timedelta(seconds=301)}),
]


@pytest.mark.parametrize("name,change", ROW_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ROW_CASES)])
def test_each_row_expectation_fails_on_exactly_the_broken_row(suite, name, change):
    rows = [dict(r) for r in CLEAN]
    rows[2].update(change)
    outcomes = run(suite, rows)
    assert not outcomes[name].success
    assert outcomes[name].failing_rows == (2,)
    assert outcomes[name].unexpected_count == 1
    others = {n for n, o in outcomes.items() if not o.success} - {name}
    assert others == ({"batch_p95_latency_ms"} if name == "latency_ms_in_range" else set())


def test_a_consistent_failure_and_skew_within_tolerance_pass(suite):
    rows = [dict(r) for r in CLEAN]
    rows[1].update(success=False, error_code="INVALID_NUMERAL", http_status=422)
    rows[2].update(occurred_at=NOW + timedelta(seconds=299), user_plan=None, user_country=None)  # anonymous
    rows[3].update(latency_ms=60000.0)
    outcomes = run(suite, rows)
    assert [n for n, o in outcomes.items() if not o.success] == ["batch_p95_latency_ms"]  # 60 s is in range, not a good p95


def test_event_id_unique_names_every_copy(suite):
    rows = [dict(r) for r in CLEAN]
    rows[3]["event_id"] = rows[1]["event_id"]
    outcome = run(suite, rows)["event_id_unique"]
    assert not outcome.success and outcome.failing_rows == (1, 3)


def test_batch_success_rate_and_p95_bounds(suite):
    rows = [fact(i, success=False, error_code="OUT_OF_RANGE", http_status=400) if i < 3 else fact(i) for i in range(4)]
    outcomes = run(suite, rows)
    assert not outcomes["batch_success_rate"].success and outcomes["batch_success_rate"].observed_value == "0.25"
    assert outcomes["batch_p95_latency_ms"].success
    slow = [fact(i, latency_ms=9000.0) for i in range(4)]
    p95 = run(suite, slow)["batch_p95_latency_ms"]
    assert not p95.success and p95.observed_value == "9000.0"
    assert run(suite, [fact(i, latency_ms=100.0 * i) for i in range(20)])["batch_p95_latency_ms"].success


def test_batch_volume_against_the_baseline(suite):
    # four rows; max_ratio 20 of a baseline of 0.1 allows 2 rows at most, of 1.0 up to 20
    assert not run(suite, CLEAN, baseline=0.1)["batch_volume"].success
    assert run(suite, CLEAN, baseline=1.0)["batch_volume"].success
    without = run(suite, CLEAN, baseline=None)["batch_volume"]
    assert without.success and "no baseline" in without.observed_value


def test_decide_applies_the_severities(suite):
    rows = [dict(r) for r in CLEAN]
    rows[0]["direction"] = "up"  # quarantine
    rows[1].update(direction="down", user_plan="gold")  # two quarantine expectations
    rows[2]["user_country"] = "ZZ"  # warn
    verdict = runner.decide(list(run(suite, rows).values()))
    assert verdict.quarantine == {0: ("direction_in_set",), 1: ("direction_in_set", "user_plan_in_set")}
    assert [o.expectation for o in verdict.warnings] == ["user_country_in_set"] and verdict.failed == ()
    strict = with_severities(suite, {"user_country_in_set": "fail"})
    verdict = runner.decide(list(run(strict, rows).values()))
    assert [o.expectation for o in verdict.failed] == ["user_country_in_set"]
    assert "user_country_in_set (fail): observed 1 unexpected, e.g. ['ZZ']" in verdict.failure_message()


def test_split_quarantine_moves_exactly_the_named_rows():
    table = facts_table([fact(i) for i in range(5)])
    schema = SILVER_CONVERSION_EVENTS_REJECTED.schema.as_arrow()
    kept, moved = results.split_quarantine(table, {1: ("direction_in_set",), 3: ("a", "b")},
                                           {"direction_in_set": "DQ_DIRECTION_IN_SET", "a": "DQ_A", "b": "DQ_B"}, schema)
    assert kept.column("event_id").to_pylist() == ["e-0", "e-2", "e-4"]
    assert moved.schema == schema
    assert moved.column("reason_codes").to_pylist() == [["DQ_DIRECTION_IN_SET"], ["DQ_A", "DQ_B"]]
    assert moved.column("source_offset").to_pylist() == [101, 103]
    assert moved.column("bronze_snapshot_id").to_pylist() == [7, 7]
    assert "e-3" in moved.column("reject_detail")[1].as_py()
    same, none = results.split_quarantine(table, {}, {}, schema)
    assert same is table and none.num_rows == 0
    assert results.without_ids(["e-1", "e-2"], ["e-1"]) == ["e-2"]


def test_same_hour_baseline_averages_the_days_that_have_rows():
    hour = datetime(2026, 3, 8, 12, tzinfo=timezone.utc)
    windows = results.same_hour_windows(hour, 7)
    assert windows[0] == (datetime(2026, 3, 7, 12, tzinfo=timezone.utc), datetime(2026, 3, 7, 13, tzinfo=timezone.utc))
    assert len(windows) == 7
    history = pa.array([
        datetime(2026, 3, 7, 12, 5, tzinfo=timezone.utc), datetime(2026, 3, 7, 12, 59, tzinfo=timezone.utc),  # day -1: 2
        datetime(2026, 3, 7, 13, 0, tzinfo=timezone.utc),  # the next hour: not counted
        datetime(2026, 3, 5, 12, 0, tzinfo=timezone.utc), datetime(2026, 3, 5, 12, 1, tzinfo=timezone.utc),
        datetime(2026, 3, 5, 12, 2, tzinfo=timezone.utc), datetime(2026, 3, 5, 12, 3, tzinfo=timezone.utc),  # day -3: 4
        datetime(2026, 2, 28, 12, 0, tzinfo=timezone.utc),  # eight days back: outside
    ], pa.timestamp("us", "UTC"))
    assert results.same_hour_baseline(history, windows) == 3.0
    assert results.same_hour_baseline(pa.array([], pa.timestamp("us", "UTC")), windows) is None


def test_result_rows_have_the_audit_schema(suite):
    outcomes = list(run(suite, CLEAN).values())
    rows = results.result_rows(outcomes, run_id="r", flow="promote-silver", table="silver.fact_conversions",
                               snapshot_id=5, suite=suite.name, evaluated_at=NOW)
    assert rows.num_rows == len(suite.expectations)
    assert rows.column("expectation").to_pylist() == [e.name for e in suite.expectations]
    assert set(rows.column("run_id").to_pylist()) == {"r"}


def test_gold_suite_on_consistent_and_broken_days():
    gold_suite = parse_suite((SUITES_DIR / f"{GOLD_DAILY_SUITE}.yml").read_text(), "gold suite")
    d1, d2 = date(2026, 3, 1), date(2026, 3, 2)
    facts = pa.table({"event_date": [d1, d1, d1, d2], "direction": ["to_roman", "to_roman", "from_roman", "to_roman"],
                      "success": [True, False, True, True]})
    metrics = pa.table({
        "event_date": [d1, d1, d2], "direction": ["to_roman", "from_roman", "to_roman"],
        "requests": [2, 1, 1], "successes": [1, 1, 1], "failures": [1, 0, 0], "success_rate": [0.5, 1.0, 1.0],
        "unique_users": [2, 1, 1], "p50_latency_ms": [1.0, 2.0, 3.0], "p95_latency_ms": [2.0, 2.0, 4.0],
        "p99_latency_ms": [3.0, 2.0, 5.0],
    })
    recount = views.recount(facts)
    assert sorted(zip(*recount.to_pydict().values())) == [(d1, "from_roman", 1, 1), (d1, "to_roman", 2, 1), (d2, "to_roman", 1, 1)]
    ok = runner.evaluate(gold_suite, views.gold_daily_view(metrics, recount))
    assert [o.expectation for o in ok if not o.success] == []
    broken = metrics.to_pydict()
    broken["failures"][0] = 5  # requests != successes + failures
    broken["success_rate"][1] = 1.5
    broken["p95_latency_ms"][2] = 2.0  # below p50 3.0 and p99 5.0 stays above
    broken["unique_users"][1] = 9
    broken["requests"][2] = 4  # and no longer the recount
    bad = {o.expectation: o for o in runner.evaluate(gold_suite, views.gold_daily_view(pa.table(broken), recount))}
    assert {n for n, o in bad.items() if not o.success} == {
        "requests_equal_successes_plus_failures", "success_rate_in_unit_range", "p95_at_least_p50",
        "unique_users_at_most_requests", "requests_equal_silver_recount"}
    assert bad["requests_equal_successes_plus_failures"].failing_rows == (0, 2)  # row 2: 4 != 1 + 0 too
    assert bad["requests_equal_silver_recount"].failing_rows == (2,)


@pytest.mark.parametrize("text,words", [
    ("suite: s\nexpectations:\n  - {name: a, expectation: expect_column_values_to_not_be_null, severity: loud}", "severity"),
    ("suite: s\nexpectations:\n  - {name: a, expectation: expect_table_row_count_to_be_between, severity: quarantine}",
     "quarantine needs a row-level"),
    ("suite: s\nexpectations:\n  - {name: a, expectation: x}\n  - {name: a, expectation: y}", "repeats"),
    ("suite: s\nexpectations:\n  - {name: a, expectation: x, sevrity: warn}", "unknown keys"),
    ("suite: s\nexpectations: [", "not valid YAML"),
    ("expectations: []", "expected keys"),
])
def test_a_bad_suite_file_is_one_clear_error(text, words):
    with pytest.raises(ValueError, match=words):
        parse_suite(text, "bad.yml")


def test_severity_overrides_come_from_settings_and_bad_ones_name_the_key(tmp_path):
    settings = load_settings(state_dir=tmp_path, dq_severities="latency_ms_in_range=quarantine, batch_volume=fail")
    loaded = {e.name: e.severity for e in load_suite(settings, SILVER_FACTS_SUITE).expectations}
    assert loaded["latency_ms_in_range"] == "quarantine" and loaded["batch_volume"] == "fail"
    assert loaded["event_id_unique"] == "fail"  # from the file
    with pytest.raises(SettingsError, match="LAKEHOUSE_DQ_SEVERITIES"):
        load_settings(state_dir=tmp_path, dq_severities="latency_ms_in_range=loud")
    with pytest.raises(SettingsError, match="LAKEHOUSE_DQ_SEVERITIES.*quarantine needs a row-level"):
        load_suite(load_settings(state_dir=tmp_path, dq_severities="batch_volume=quarantine"), SILVER_FACTS_SUITE)
    with pytest.raises(SettingsError, match="LAKEHOUSE_DQ_SEVERITIES.*unknown expectation 'latency_in_range'"):
        check_override_names(load_settings(state_dir=tmp_path, dq_severities="latency_in_range=warn"))
    with pytest.raises(SettingsError, match="LAKEHOUSE_DQ_SUITES_DIR"):
        load_suite(load_settings(state_dir=tmp_path, dq_suites_dir=tmp_path), SILVER_FACTS_SUITE)


def test_latest_status_summarizes_the_last_runs_per_table():
    t0 = NOW
    rows = []
    for k, (run, ok) in enumerate([("r1", True), ("r2", False), ("r3", True)]):
        for name in ("a", "b"):
            rows.append({"run_id": run, "flow": "promote-silver", "table_name": "silver.fact_conversions",
                         "snapshot_id": k, "suite": "s", "expectation": name, "expectation_type": "x",
                         "severity": "warn", "success": ok or name == "a", "observed_value": "3 unexpected",
                         "element_count": 9, "unexpected_count": 0 if ok or name == "a" else 3,
                         "unexpected_percent": 0.0, "evaluated_at": t0 + timedelta(minutes=k)})
    audit = pa.Table.from_pylist(rows, schema=results.RESULT_SCHEMA)
    status = results.latest_status(audit, runs=2)
    assert [(s["run_id"], s["met"], s["expectations"], s["failing"]) for s in status] == [
        ("r3", 2, 2, []), ("r2", 1, 2, ["b (warn): 3 unexpected"])]


def test_data_docs_page_is_written_into_the_state_folder(tmp_path, suite):
    from tasks.quality.docs import build_page, index_page

    settings = load_settings(state_dir=tmp_path)
    outcomes, result = runner.validate(suite, views.fact_view(facts_table(CLEAN), suite.columns(), NOW))
    page = build_page(settings, suite.name, "run-1", "bronze-7", NOW, result)
    assert page.is_file() and page.suffix == ".html" and tmp_path in page.parents
    assert "run-1" in page.parts and "values must be unique" in page.read_text()  # GX renders the expectation
    assert index_page(settings).is_file()
