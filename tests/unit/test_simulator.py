"""The traffic model: deterministic, faithful to the contract, and dirty in the ways it promises."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from tasks.roman import expected_output
from tasks.simulator import (
    DEFAULT_END,
    KINDS,
    MALFORMED_KINDS,
    OutRecord,
    TrafficProfile,
    build_population,
    generate,
)

DAY_MS = 86_400_000
DIRTY = TrafficProfile(
    events=20_000, seed=7, duplicate_rate=0.02, late_rate=0.03, malformed_rate=0.05,
    wrong_conversion_rate=0.01, v2_share=0.4, users=500, days=5,
)
OCCURRED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
V1_FIELDS = {
    "event_id": str, "event_type": str, "schema_version": int, "occurred_at": str,
    "user_id": (str, type(None)), "user_plan": (str, type(None)), "user_country": (str, type(None)),
    "direction": str, "input": str, "output": (str, type(None)), "success": bool,
    "error_code": (str, type(None)), "latency_ms": (int, float), "endpoint": str, "http_status": int,
}
V2_FIELDS = {"region": str, "cache_hit": bool}
STATUS = {"INVALID_NUMERAL": 422, "OUT_OF_RANGE": 422, "MALFORMED_REQUEST": 400}
ENDPOINT = {"to_roman": "/v1/to-roman", "from_roman": "/v1/from-roman"}


def find_contract_violations(key: bytes | None, value: bytes | None) -> list[str]:
    """Everything wrong with a record per the contract; [] for a conforming event."""
    try:
        event = json.loads(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ["not JSON"]
    if not isinstance(event, dict):
        return ["not an object"]
    problems = []
    version = event.get("schema_version")
    if type(version) is not int or version not in (1, 2):
        return [f"schema_version {version!r}"]
    expected = V1_FIELDS | (V2_FIELDS if version == 2 else {})
    for name, types in expected.items():
        if name not in event:
            problems.append(f"missing {name}")
        elif not isinstance(event[name], types) or (types is int and isinstance(event[name], bool)):
            problems.append(f"{name} has type {type(event[name]).__name__}")
    extra = set(event) - set(expected) - {"client"}
    if extra:
        problems.append(f"unknown fields {sorted(extra)}")
    if problems:
        return problems
    uuid.UUID(event["event_id"])
    if event["event_type"] != "conversion":
        problems.append("event_type")
    if not OCCURRED_AT.match(event["occurred_at"]):
        problems.append("occurred_at format")
    if event["direction"] not in ENDPOINT or event["endpoint"] != ENDPOINT[event["direction"]]:
        problems.append("direction/endpoint")
    if event["user_plan"] not in ("free", "pro", "enterprise", None):
        problems.append("user_plan")
    if (event["user_id"] is None) != (event["user_plan"] is None) or (event["user_id"] is None) != (key is None):
        problems.append("anonymity")
    if key is not None and key != event["user_id"].encode():
        problems.append("key is not the user_id")
    if event["latency_ms"] < 0:
        problems.append("latency")
    if event["success"]:
        if event["error_code"] is not None or event["http_status"] != 200 or event["output"] is None:
            problems.append("success with error")
    elif STATUS.get(event["error_code"]) != event["http_status"] or event["output"] is not None:
        problems.append("failure without matching error")
    if event.get("client", "web") not in ("web", "cli", "sdk", "mobile", None):
        problems.append("client")
    return problems


def parse_occurred_ms(event: dict) -> int:
    return int(datetime.fromisoformat(event["occurred_at"]).timestamp() * 1000)


@pytest.fixture(scope="module")
def records() -> list[OutRecord]:
    return list(generate(DIRTY))


@pytest.fixture(scope="module")
def events(records) -> list[tuple[OutRecord, dict]]:
    """The records that should conform, parsed (duplicates included)."""
    return [(r, json.loads(r.value)) for r in records if r.kind != "malformed"]


def test_same_seed_same_bytes_and_other_seed_differs():
    profile = TrafficProfile(events=3000, seed=11, malformed_rate=0.01)
    first = list(generate(profile))
    assert first == list(generate(profile))
    other = list(generate(TrafficProfile(events=3000, seed=12, malformed_rate=0.01)))
    assert [r.value for r in first] != [r.value for r in other]
    assert len(first) == len(other) == 3000


def test_default_end_is_fixed_not_now():
    assert TrafficProfile().end == DEFAULT_END
    aware = datetime(2025, 3, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert TrafficProfile(end=aware).end == datetime(2025, 3, 1, 10, tzinfo=timezone.utc)


def test_counts_and_rates_are_honoured(records, events):
    assert len(records) == DIRTY.events
    kinds = Counter(r.kind for r in records)
    assert set(kinds) == set(KINDS)
    for kind, rate in (("duplicate", DIRTY.duplicate_rate), ("late", DIRTY.late_rate),
                       ("malformed", DIRTY.malformed_rate), ("wrong_conversion", DIRTY.wrong_conversion_rate)):
        assert kinds[kind] == pytest.approx(rate * DIRTY.events, rel=0.2), kind
    originals = [e for r, e in events if r.kind != "duplicate"]
    v2 = sum(e["schema_version"] == 2 for e in originals) / len(originals)
    anonymous = sum(e["user_id"] is None for e in originals) / len(originals)
    failed = sum(not e["success"] for e in originals) / len(originals)
    assert v2 == pytest.approx(DIRTY.v2_share, abs=0.03)
    assert anonymous == pytest.approx(0.15, abs=0.02)
    assert 0.01 < failed < 0.1
    assert {e["direction"] for e in originals} == {"to_roman", "from_roman"}
    assert {e.get("client", "absent") for e in originals} >= {"web", "cli", "sdk", "absent", None}


def test_clean_profile_has_only_valid_records():
    profile = TrafficProfile(events=2000, duplicate_rate=0, late_rate=0, malformed_rate=0,
                             wrong_conversion_rate=0)
    assert {r.kind for r in generate(profile)} == {"valid"}
    assert list(generate(TrafficProfile(events=0))) == []


def test_conforming_events_follow_the_contract(events):
    wrong = {r.value for r, _ in events if r.kind == "wrong_conversion"}  # duplicates of them stay wrong
    for record, event in events:
        assert find_contract_violations(record.key, record.value) == [], record
        answer = expected_output(event["direction"], event["input"])
        if not event["success"]:
            assert answer is None, event
        elif record.value in wrong:
            assert answer is not None and event["output"] != answer, event
        else:
            assert event["output"] == answer, event


def test_numbers_have_a_long_tail_and_load_is_diurnal(events):
    numbers = [int(e["input"]) for r, e in events if e["direction"] == "to_roman" and e["success"]]
    small = sum(n <= 10 for n in numbers)
    large = sum(3000 <= n <= 3999 for n in numbers)
    assert small > 3 * large > 0
    hours = Counter(int(e["occurred_at"][11:13]) for r, e in events if r.kind == "valid")
    assert sum(hours[h] for h in range(13, 18)) > 2 * sum(hours[h] for h in range(1, 6))


def test_latency_is_skewed(events):
    latencies = sorted(e["latency_ms"] for _, e in events)
    median, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    assert 0 < median < 5 and p99 > 4 * median


def test_v2_adds_region_and_cache_hit(events):
    v2 = [e for _, e in events if e["schema_version"] == 2]
    assert {e["cache_hit"] for e in v2} == {True, False}
    assert len({e["region"] for e in v2}) >= 3
    assert all("region" not in e for _, e in events if e["schema_version"] == 1)


def test_user_attributes_are_consistent_in_time(events):
    users = {u.user_id: u for u in build_population(DIRTY)}
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    history = defaultdict(set)
    for _, e in events:
        if e["user_id"] is None:
            assert e["user_country"] is None
            continue
        state = users[e["user_id"]].state_at(parse_occurred_ms(e))
        assert (e["user_plan"], e["user_country"]) == (state.plan, state.country)
        assert seen.setdefault((e["user_id"], e["occurred_at"]), (state.plan, state.country)) == (
            state.plan, state.country)
        history[e["user_id"]].add((e["user_plan"], e["user_country"]))
    assert sum(len(states) > 1 for states in history.values()) >= 20  # the SCD2 dimension has history
    assert len({e["user_plan"] for _, e in events}) == 4


def test_kafka_time_follows_event_time(records, events):
    for record, event in events:
        lag = record.timestamp_ms - parse_occurred_ms(event)
        if record.kind == "late":
            assert DAY_MS <= lag <= 7 * DAY_MS, event
        elif record.kind != "duplicate":
            assert 0 <= lag < 120_000, event
    start = DIRTY.end_ms - DIRTY.days * DAY_MS
    times = [r.timestamp_ms for r in records if r.kind == "valid"]
    assert start <= min(times) and max(times) < DIRTY.end_ms + 120_000


def test_duplicates_resend_the_same_bytes_later(records):
    first_seen: dict[bytes, OutRecord] = {}
    partitions = Counter()
    for r in records:
        if r.kind == "duplicate":
            original = first_seen[r.value]  # an earlier record, byte-identical
            assert r.key == original.key and r.timestamp_ms > original.timestamp_ms
            assert json.loads(r.value)["event_id"] == json.loads(original.value)["event_id"]
            partitions[r.partition] += 1
        elif r.kind != "malformed":
            first_seen.setdefault(r.value, r)
    assert partitions[None] > 0 and set(partitions) - {None} <= {0, 1, 2} and len(partitions) > 1
    ids = [json.loads(r.value)["event_id"] for r in records if r.kind not in ("duplicate", "malformed")]
    assert len(ids) == len(set(ids))


def test_malformed_records_are_varied_and_never_conform(records):
    malformed = [r for r in records if r.kind == "malformed"]
    assert {r.detail for r in malformed} == set(MALFORMED_KINDS)
    for r in malformed:
        assert find_contract_violations(r.key, r.value), r
    assert any(r.value is None for r in malformed) and any(r.value == b"" for r in malformed)
    huge = [r for r in malformed if r.detail == "huge"]
    assert 1 <= len(huge) <= max(1, DIRTY.events // 20_000)
    assert all(2_000_000 <= len(r.value) <= 3_000_000 for r in huge)


def test_one_huge_value_in_any_dirty_run_of_a_thousand():
    profile = TrafficProfile(events=1000, malformed_rate=0.0001, duplicate_rate=0, late_rate=0)
    assert [r.detail for r in generate(profile) if r.kind == "malformed"] == ["huge"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("duplicate_rate", 1.5, r"duplicate_rate must be in \[0, 1\], got 1.5"),
        ("late_rate", -0.1, "late_rate must be in"),
        ("malformed_rate", float("nan"), "malformed_rate must be in"),
        ("wrong_conversion_rate", 2, "wrong_conversion_rate must be in"),
        ("v2_share", "0.3", "v2_share must be in"),
        ("events", -1, "events must be >= 0"),
        ("events", 1.5, "events must be an integer"),
        ("days", 0, "days must be >= 1"),
        ("users", 0, "users must be >= 1"),
        ("rate", -5, "rate must be"),
        ("end", datetime(2025, 1, 1), "end must be a timezone-aware datetime"),
    ],
)
def test_profile_validation_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrafficProfile(**{field: value})


def test_dirty_rates_cannot_exceed_one():
    with pytest.raises(ValueError, match="must be <= 1"):
        TrafficProfile(duplicate_rate=0.6, late_rate=0.6)
