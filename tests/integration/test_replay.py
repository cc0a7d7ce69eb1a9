"""Replay of quarantined rows on a real silver and gold (private SQLite catalogs and file
warehouses, the stack's Prefect and Ray): a wrongly strict suite (an allowed-country list missing
one country) quarantines valid events; after the fix, replay makes silver and gold equal to a
clean run of the same events, and a second replay changes nothing."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import timedelta

import pytest
import yaml

from tasks.catalog import open_catalog
from tasks.quality.suites import GOLD_DAILY_SUITE, SILVER_FACTS_SUITE, SUITES_DIR
from tasks.tables import (
    AUDIT_DQ_RESULTS,
    AUDIT_LINEAGE_EVENTS,
    GOLD_DAILY_CONVERSION_METRICS,
    GOLD_USER_ACTIVITY_SUMMARY,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
)
from tests.integration.conftest import open_private_lakehouse
from tests.integration.private_lakehouse import NOW, land_in_bronze, make_event

pytestmark = pytest.mark.stack

# (n, user, country, plan, minutes ago): u-2 lives in FR and changes plan, so SCD2 has two versions
EVENTS = [(1, "u-1", "DE", "free", 50), (2, "u-2", "FR", "free", 40), (3, "u-3", "US", "pro", 30),
          (4, "u-2", "FR", "pro", 20), (5, "u-1", "DE", "free", 10), (6, "u-4", "FR", "enterprise", 5)]


def values() -> list[bytes]:
    return [make_event(n, user=u, user_country=c, plan=p, occurred=NOW - timedelta(minutes=m)) for n, u, c, p, m in EVENTS] + [
        make_event(6, user="u-4", user_country="FR", plan="enterprise", occurred=NOW - timedelta(minutes=5)),  # a duplicate
        b"not json"]


def strict_suites(folder):
    """The repository's suites with FR missing from the allowed countries, quarantining."""
    folder.mkdir()
    shutil.copy(SUITES_DIR / f"{GOLD_DAILY_SUITE}.yml", folder)
    doc = yaml.safe_load((SUITES_DIR / f"{SILVER_FACTS_SUITE}.yml").read_text())
    for e in doc["expectations"]:
        if e["name"] == "user_country_in_set":
            e["kwargs"]["value_set"] = [c for c in e["kwargs"]["value_set"] if c != "FR"]
            e["severity"] = "quarantine"
    (folder / f"{SILVER_FACTS_SUITE}.yml").write_text(yaml.safe_dump(doc))
    return folder


def rows(settings, spec, drop=(), key=()):
    table = open_catalog(settings, "serving").load_table(spec.identifier).scan().to_arrow()
    out = [{k: v for k, v in r.items() if k not in drop} for r in table.to_pylist()]
    return sorted(out, key=lambda r: tuple(str(r[k]) for k in key))


def test_replay_after_the_fix_equals_a_clean_run_and_is_idempotent(private, tmp_path, monkeypatch):
    from flows.gold import gold_flow
    from flows.replay import replay_flow
    from flows.silver import silver_flow

    strict = private.model_copy(update={"dq_suites_dir": strict_suites(tmp_path / "strict")})
    land_in_bronze(private, values())
    first = silver_flow(settings=strict)
    gold_flow(settings=strict)
    french = {str(uuid.UUID(int=n)) for n, _, c, _, _ in EVENTS if c == "FR"}
    assert first["reasons"]["DQ_USER_COUNTRY_IN_SET"] == len(french)  # the duplicate copy is dropped as one
    assert {r["event_id"] for r in rows(private, SILVER_FACT_CONVERSIONS)} & french == set()

    dry = replay_flow(reason="DQ_USER_COUNTRY_IN_SET", dry_run=True, settings=private)
    assert (dry["promoted"], dry["committed"]) == (len(french), {})
    replayed = replay_flow(reason="DQ_USER_COUNTRY_IN_SET", settings=private)  # the fixed suite: the repository's
    assert (replayed["promoted"], replayed["still_quarantined"]) == (len(french), 0)
    again = replay_flow(reason="DQ_USER_COUNTRY_IN_SET", settings=private)
    assert (again["selected"], again["promoted"], again["committed"]) == (0, 0, {})
    rejected = rows(private, SILVER_CONVERSION_EVENTS_REJECTED)
    assert [r["reason_codes"] for r in rejected] == [["MALFORMED_JSON"]]  # the malformed record stays
    # lineage like every flow: the run that committed kept START and COMPLETE with its snapshots, and
    # the suite it re-checked with as assertions on the facts (the dry run and the idle rerun keep none)
    kept = [r for r in rows(private, AUDIT_LINEAGE_EVENTS) if r["job_name"] == "replay-quarantine"]
    assert sorted(r["event_type"] for r in kept) == ["COMPLETE", "START"]
    [done] = [json.loads(r["event"]) for r in kept if r["event_type"] == "COMPLETE"]
    assert done["run"]["facets"]["lakehouse"]["outputSnapshots"] == replayed["committed"]
    [facts_out] = [o for o in done["outputs"] if o["name"].endswith("fact_conversions")]
    suite = yaml.safe_load((SUITES_DIR / f"{SILVER_FACTS_SUITE}.yml").read_text())["expectations"]
    assert sorted(a["name"] for a in facts_out["facets"]["dataQualityAssertions"]["assertions"]) == \
        sorted(e["name"] for e in suite)

    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean = open_private_lakehouse(clean_dir, monkeypatch)
    land_in_bronze(clean, values())
    silver_flow(settings=clean)
    gold_flow(settings=clean)

    # bronze snapshot ids differ between the two lakehouses; everything else must be equal
    assert rows(private, SILVER_FACT_CONVERSIONS, ("bronze_snapshot_id",), ("event_id",)) == \
        rows(clean, SILVER_FACT_CONVERSIONS, ("bronze_snapshot_id",), ("event_id",))
    assert rows(private, SILVER_DIM_USERS, (), ("user_id", "valid_from")) == rows(clean, SILVER_DIM_USERS, (), ("user_id", "valid_from"))
    assert rows(private, GOLD_DAILY_CONVERSION_METRICS, (), ("event_date", "direction")) == \
        rows(clean, GOLD_DAILY_CONVERSION_METRICS, (), ("event_date", "direction"))
    assert rows(private, GOLD_USER_ACTIVITY_SUMMARY, (), ("user_id",)) == rows(clean, GOLD_USER_ACTIVITY_SUMMARY, (), ("user_id",))

    audit = rows(private, AUDIT_DQ_RESULTS)
    assert {r["flow"] for r in audit} == {"promote-silver", "build-gold", "replay-quarantine"}
    gold_checks = [r for r in audit if r["suite"] == GOLD_DAILY_SUITE]
    assert gold_checks and all(r["success"] for r in gold_checks)  # gold agrees with its silver recount
    history = open_catalog(private, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier).history()
    summaries = [open_catalog(private, "serving").load_table(SILVER_FACT_CONVERSIONS.identifier)
                 .snapshot_by_id(h.snapshot_id).summary.additional_properties for h in history]
    assert sum("lakehouse.replay" in s for s in summaries) == 1
