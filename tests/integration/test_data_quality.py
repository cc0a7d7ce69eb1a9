"""Data quality on a real silver promotion and gold build (private SQLite catalog and file
warehouse, the stack's Prefect and Ray): a ``fail`` expectation stops silver with nothing
committed and the rerun after relaxing it promotes exactly once; a ``quarantine`` expectation
routes exactly the failing rows; audit.dq_results holds one row per expectation per run."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
import yaml

from tasks.catalog import open_catalog
from tasks.quality.suites import SILVER_FACTS_SUITE, SUITES_DIR
from tasks.tables import AUDIT_DQ_RESULTS, SILVER_CONVERSION_EVENTS_REJECTED, SILVER_DIM_USERS, SILVER_FACT_CONVERSIONS
from tests.integration.private_lakehouse import land_in_bronze, make_event

pytestmark = pytest.mark.stack


def suite_names(name: str) -> list[str]:
    """The expectation names of a suite file, read here independently of the loader."""
    return [e["name"] for e in yaml.safe_load((SUITES_DIR / f"{name}.yml").read_text())["expectations"]]


def rows_of(settings, spec) -> list[dict]:
    catalog = open_catalog(settings, "serving")
    try:
        return catalog.load_table(spec.identifier).scan().to_arrow().to_pylist()
    except Exception as exc:  # noqa: BLE001 - a table never created holds no rows
        if "NoSuchTable" in type(exc).__name__:
            return []
        raise


def snapshots(settings, spec) -> int:
    try:
        return len(open_catalog(settings, "serving").load_table(spec.identifier).history())
    except Exception as exc:  # noqa: BLE001
        if "NoSuchTable" in type(exc).__name__:
            return 0
        raise


def per_run(audit: list[dict]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for row in audit:
        out.setdefault(row["run_id"], Counter())[row["expectation"]] += 1
    return out


def test_fail_stops_before_any_commit_and_the_relaxed_rerun_promotes_once(private):
    from flows.silver import silver_flow

    events = {n: make_event(n, user_country="ZZ" if n == 3 else "DE") for n in range(1, 6)}
    land_in_bronze(private, list(events.values()))
    strict = private.model_copy(update={"dq_severities": "user_country_in_set=fail"})
    with pytest.raises(Exception, match=r"user_country_in_set \(fail\): observed 1 unexpected, e.g. \['ZZ'\]"):
        silver_flow(settings=strict)
    for spec in (SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS, SILVER_DIM_USERS):
        assert snapshots(private, spec) == 0, spec.identifier  # nothing committed
    audit = rows_of(private, AUDIT_DQ_RESULTS)
    (failed_run, counts), = per_run(audit).items()
    assert counts == Counter(suite_names(SILVER_FACTS_SUITE))  # one row per expectation
    failing = [r for r in audit if not r["success"]]
    assert [(r["expectation"], r["severity"], r["unexpected_count"]) for r in failing] == [("user_country_in_set", "fail", 1)]

    report = silver_flow(settings=private)  # relaxed: the suite file's own severity (warn)
    assert report["facts"] == 5
    ids = [r["event_id"] for r in rows_of(private, SILVER_FACT_CONVERSIONS)]
    assert sorted(ids) == sorted(str(uuid.UUID(int=n)) for n in events)  # every event exactly once
    again = silver_flow(settings=private)
    assert again["bronze_records"] == 0 and again["committed"] == {}
    runs = per_run(rows_of(private, AUDIT_DQ_RESULTS))
    assert len(runs) == 2 and all(c == Counter(suite_names(SILVER_FACTS_SUITE)) for c in runs.values())


def test_quarantine_routes_exactly_the_failing_rows(private, stack_settings, tmp_path):
    from flows.silver import silver_flow

    countries = {1: "DE", 2: "QQ", 3: "US", 4: "XX", 5: "FR", 6: "DE"}
    allowed = set(yaml.safe_load((SUITES_DIR / f"{SILVER_FACTS_SUITE}.yml").read_text())["expectations"][
        suite_names(SILVER_FACTS_SUITE).index("user_country_in_set")]["kwargs"]["value_set"])
    values = [make_event(n, user=f"u-{n}", user_country=c) for n, c in countries.items()] + [b"not json"]
    land_in_bronze(private, values)
    settings = private.model_copy(update={"dq_severities": "user_country_in_set=quarantine"})
    state = silver_flow(settings=settings, return_state=True)
    report = state.result()

    truth_out = {str(uuid.UUID(int=n)) for n, c in countries.items() if c not in allowed}
    truth_in = {str(uuid.UUID(int=n)) for n, c in countries.items() if c in allowed}
    assert truth_out and truth_in
    facts = {r["event_id"] for r in rows_of(private, SILVER_FACT_CONVERSIONS)}
    assert facts == truth_in
    rejected = rows_of(private, SILVER_CONVERSION_EVENTS_REJECTED)
    dq = [r for r in rejected if any(code.startswith("DQ_") for code in r["reason_codes"])]
    assert sorted(r["reason_codes"] for r in dq) == [["DQ_USER_COUNTRY_IN_SET"]] * len(truth_out)
    # the bronze coordinates of a quarantined row point at the event it was
    offsets = {json.loads(values[n - 1])["event_id"]: n - 1 for n in countries}
    assert sorted(r["source_offset"] for r in dq) == sorted(offsets[i] for i in truth_out)
    assert report["rejected"] == len(truth_out) + 1 and report["reasons"]["DQ_USER_COUNTRY_IN_SET"] == len(truth_out)
    assert report["facts"] == len(truth_in)
    users = {r["user_id"] for r in rows_of(private, SILVER_DIM_USERS)}
    assert users == {f"u-{n}" for n, c in countries.items() if c in allowed}

    audit = rows_of(private, AUDIT_DQ_RESULTS)
    silver_rows = [r for r in audit if r["suite"] == SILVER_FACTS_SUITE]
    quarantined = [r for r in silver_rows if r["expectation"] == "user_country_in_set"]
    assert [(r["success"], r["severity"], r["unexpected_count"]) for r in quarantined] == [(False, "quarantine", len(truth_out))]
    prefect_ui_shows_the_artifact(stack_settings, state.state_details.flow_run_id, silver_rows, tmp_path)


def prefect_ui_shows_the_artifact(stack_settings, flow_run_id, audit: list[dict], tmp_path) -> None:
    """The run's data-quality artifacts (found through the Prefect API by flow run) opened in the
    real UI in headless Chromium, after its basic-auth login: the summary shows the suite and how
    many expectations were met, and the table names each failing one, as audit.dq_results says."""
    import asyncio
    import shutil
    from pathlib import Path

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from infra.services import prefect_client
    from tests.conftest import ROOT
    from tests.e2e.cdp import CHROMIUM, Chromium
    from tests.e2e.test_orchestration import CHROMIUM_FLAGS, LOGIN_BUTTON, LOGIN_FIELD

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: the Prefect UI part is not checked")

    async def artifacts():
        async with prefect_client(stack_settings) as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    key = "dq-" + SILVER_FACTS_SUITE.replace("_", "-")
    by_key = {a.key: a for a in asyncio.run(artifacts())}
    summary, table = by_key[f"{key}-summary"], by_key[key]
    met, failing = sum(r["success"] for r in audit), sorted(r["expectation"] for r in audit if not r["success"])
    assert failing  # the page must show a failure, not only passes

    ui = stack_settings.prefect_api_url.removesuffix("/api")
    with Chromium(CHROMIUM_FLAGS, tmp_path / "chromium-profile", timeout=60) as browser:
        page = browser.new_page()
        page.navigate(f"{ui}/artifacts/artifact/{summary.id}")
        page.wait_for(f"!!document.querySelector({LOGIN_FIELD!r})", what="the login page")
        page.type_into(LOGIN_FIELD, stack_settings.prefect_api_auth_string.get_secret_value())
        page.click(LOGIN_BUTTON)
        page.wait_for("location.pathname !== '/login'", what="the login to pass")
        page.navigate(f"{ui}/artifacts/artifact/{summary.id}")
        expected = [f"Data quality: {SILVER_FACTS_SUITE} on {SILVER_FACT_CONVERSIONS.identifier}",
                    f"{met} of {len(audit)} expectations met", *failing]
        page.wait_for(f"{expected!r}.every(t => document.body.innerText.includes(t))", what=f"the summary {expected}")
        shot = page.screenshot(tmp_path / "prefect-dq-artifact.png")
        page.navigate(f"{ui}/artifacts/artifact/{table.id}")
        page.wait_for(f"{failing!r}.every(t => document.body.innerText.includes(t)) && "
                      "document.body.innerText.includes('FAIL')", what=f"the table naming {failing} as FAIL")
    keep = ROOT / ".lakehouse" / "test-output"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / shot.name)
