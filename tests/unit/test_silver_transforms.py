"""Silver's pure transforms on a handful of rows: every reason code, dedup, and SCD2 as a property."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import daft
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from tasks.transforms import silver
import pyarrow as pa
import pyarrow.compute as pc

from tasks.transforms.contract import _SHAPE, FIELDS, PARSED_TYPE, REASONS, check_event, check_events, check_values

KAFKA_TS = datetime(2024, 12, 25, 12, 0, tzinfo=timezone.utc)
KAFKA_US = int(KAFKA_TS.timestamp() * 1_000_000)
LIMIT = 64 * 1024


def event(**overrides) -> dict:
    base = {
        "event_id": "6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e11", "event_type": "conversion", "schema_version": 1,
        "occurred_at": "2024-12-25T10:15:30.123Z", "user_id": "u-00042", "user_plan": "pro",
        "user_country": "DE", "direction": "to_roman", "input": "1994", "output": "MCMXCIV", "success": True,
        "error_code": None, "latency_ms": 3.2, "endpoint": "/v1/to-roman", "http_status": 200, "client": "web",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def raw(**overrides) -> bytes:
    return json.dumps(event(**overrides)).encode()


def reasons(value: bytes | None) -> list[str]:
    return check_event(value, KAFKA_US, LIMIT)["reason_codes"]


def test_the_contract_example_is_valid():
    out = check_event(raw(), KAFKA_US, LIMIT)
    assert out["reason_codes"] == [] and out["numeral_value"] == 1994
    assert out["occurred_at_us"] == int(datetime(2024, 12, 25, 10, 15, 30, 123000, tzinfo=timezone.utc).timestamp() * 1e6)


@pytest.mark.parametrize(
    "value, code",
    [
        (b"x" * (LIMIT + 1), "OVERSIZED"),
        (b'{"event_id": "trunc', "MALFORMED_JSON"),
        (b"\xff\xfe\x00", "MALFORMED_JSON"),
        (b"", "MALFORMED_JSON"),
        (None, "MALFORMED_JSON"),
        (b"[1, 2]", "NOT_AN_OBJECT"),
        (b'"a string"', "NOT_AN_OBJECT"),
        (raw(occurred_at=_DROP), "MISSING_FIELD"),
        (raw(schema_version=2), "MISSING_FIELD"),  # v2 needs region and cache_hit
        (raw(latency_ms="fast"), "BAD_TYPE"),
        (raw(success="yes"), "BAD_TYPE"),
        (raw(http_status=True), "BAD_TYPE"),
        (raw(event_id="not-a-uuid"), "BAD_TYPE"),
        (raw(user_id="\ud800"), "BAD_TYPE"),  # a lone surrogate: not text UTF-8 can hold
        (raw(http_status=10**40), "INTEGER_OUT_OF_RANGE"),
        (raw(schema_version=-(2**31) - 1), "INTEGER_OUT_OF_RANGE"),
        (raw(latency_ms=float("nan")), "NON_FINITE_NUMBER"),
        (raw(latency_ms=float("inf")), "NON_FINITE_NUMBER"),
        (raw(latency_ms=10**400), "NON_FINITE_NUMBER"),
        (raw(occurred_at="2024-12-25 10:15:30"), "BAD_TYPE"),
        (raw(schema_version=3), "UNKNOWN_SCHEMA_VERSION"),
        (raw(user_plan="platinum"), "BAD_ENUM"),
        (raw(direction="to_klingon"), "BAD_ENUM"),
        (raw(event_type="click"), "BAD_ENUM"),
        (raw(user_country="Germany"), "BAD_ENUM"),
        (raw(output="MCMXCV"), "WRONG_CONVERSION"),
        (raw(direction="from_roman", endpoint="/v1/from-roman", input="XIV", output="15"), "WRONG_CONVERSION"),
        (raw(success=True, error_code="OUT_OF_RANGE"), "INCONSISTENT_ERROR"),
        (raw(success=False, output=None, http_status=422, error_code=None), "INCONSISTENT_ERROR"),
        (raw(latency_ms=-0.5), "NEGATIVE_LATENCY"),
        (raw(occurred_at="2024-12-25T12:06:00Z"), "FUTURE_EVENT"),
    ],
)
def test_every_reason_code(value, code):
    assert code in reasons(value)


def test_all_reason_codes_are_covered_above():
    covered = {"OVERSIZED", "MALFORMED_JSON", "NOT_AN_OBJECT", "MISSING_FIELD", "BAD_TYPE", "INTEGER_OUT_OF_RANGE",
               "NON_FINITE_NUMBER", "UNKNOWN_SCHEMA_VERSION", "BAD_ENUM", "WRONG_CONVERSION", "INCONSISTENT_ERROR",
               "NEGATIVE_LATENCY", "FUTURE_EVENT"}
    assert covered == set(REASONS)


def test_several_reasons_are_all_reported():
    codes = reasons(raw(latency_ms=-1, user_plan="gold", output="X"))
    assert {"NEGATIVE_LATENCY", "BAD_ENUM", "WRONG_CONVERSION"} <= set(codes)


def test_valid_failures_and_v2_events_pass():
    failure = raw(input="4000", output=None, success=False, error_code="OUT_OF_RANGE", http_status=422)
    v2 = raw(schema_version=2, region="eu-west-1", cache_hit=True)
    anonymous = raw(user_id=None, user_plan=None, user_country=None)
    within_tolerance = raw(occurred_at="2024-12-25T12:04:00Z")
    for value in (failure, v2, anonymous, within_tolerance):
        assert reasons(value) == [], value


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@hsettings(max_examples=300, deadline=None)
def test_no_input_crashes_the_checker(value):
    out = check_event(value, KAFKA_US, LIMIT)
    assert out["reason_codes"], "random bytes are never a valid event"


def test_fast_path_agrees_with_the_full_check():
    values = [raw(), raw(output="X"), b"[]", None, raw(schema_version=2, region="eu", cache_hit=False), raw(latency_ms=-1),
              raw(region="eu", cache_hit=True), raw(region=None)]
    fast = check_events(values, [KAFKA_US] * len(values), LIMIT)
    assert fast == [tuple(check_event(v, KAFKA_US, LIMIT)[f] for f in FIELDS) for v in values]


def compact(**overrides) -> bytes:
    return json.dumps(event(**overrides), separators=(",", ":")).encode()


def bulk(values: list, kafka_us: list | None = None) -> list[tuple]:
    kafka_us = kafka_us if kafka_us is not None else [KAFKA_US] * len(values)
    out = check_values(pa.array(values, pa.binary()), pa.array(kafka_us, pa.int64()), LIMIT)
    return [tuple(row[f] for f in FIELDS) for row in out.to_pylist()]


def one_by_one(values: list, kafka_us: list | None = None) -> list[tuple]:
    kafka_us = kafka_us if kafka_us is not None else [KAFKA_US] * len(values)
    return [tuple(check_event(v, ts, LIMIT)[f] for f in FIELDS) for v, ts in zip(values, kafka_us)]


# Values the vectorized shape accepts but the contract still rejects, or where it must defer.
SHAPED_EDGE_CASES = [
    compact(), raw(),  # compact, and json.dumps' default separators
    compact(occurred_at="2024-02-30T10:15:30Z"), compact(occurred_at="2024-12-25T24:00:00Z"),
    compact(occurred_at="2024-12-25T10:15:60Z"), compact(occurred_at="1969-12-31T23:59:59.500Z"),
    compact(occurred_at="0000-01-01T00:00:00Z"), compact(occurred_at="2024-12-25T10:15:30.123456+00:00"),
    compact(occurred_at="2024-12-25T12:05:00Z"), compact(occurred_at="2024-12-25T12:05:00.001Z"),
    compact(output="MCMXCV"), compact(input="0994", output="CMXCIV"), compact(input="4000", output=None),
    compact(success=False, output=None, error_code="OUT_OF_RANGE", http_status=422, input="4000"),
    compact(success=False, output=None, error_code="OUT_OF_RANGE", http_status=400, input="12"),
    compact(success=False, output="X", error_code="OUT_OF_RANGE", http_status=422),
    compact(success=False, output=None, error_code=None, http_status=422),
    compact(success=True, error_code="OUT_OF_RANGE"), compact(http_status=422),
    compact(direction="from_roman", endpoint="/v1/from-roman", input="XIV", output="14"),
    compact(direction="from_roman", endpoint="/v1/from-roman", input="XIIII", output="14"),
    compact(direction="from_roman", endpoint="/v1/to-roman", input="XIV", output="14"),
    compact(schema_version=2, region="eu-west-1", cache_hit=False), compact(schema_version=2),
    compact(region="eu-west-1", cache_hit=True), compact(schema_version=2, client=_DROP, region="", cache_hit=True),
    compact(client=_DROP), compact(client=None), compact(user_id=None, user_plan=None, user_country=None),
    compact(latency_ms=0), compact(latency_ms=12), compact(latency_ms=0.1234567890123),
    compact(event_id="6F1C2A7E-3B7D-4A53-9F1E-0C6A2D9B4E11"),
]
# Values the shape refuses: the per-row check decides them, fast path or full check.
UNSHAPED_CASES = [
    json.dumps(dict(reversed(list(event().items())))).encode(),  # another field order
    compact(user_id="u-\u00e9"), compact(user_id="ü-1"), compact(latency_ms=1e-30), compact(latency_ms=-1.5),
    compact(occurred_at="2024-12-25T10:15:30+01:00"), compact(occurred_at="2024-12-25T10:15:30.1Z"),
    compact(schema_version=1.0), compact(http_status=201), compact() + b"x", compact() + b"\n",
    b'{"event_id":"6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e11","event_id":"6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e12"}',
    b"\xef\xbb\xbf" + compact(), compact().replace(b'"conversion"', b'"conversion",  "extra": [1]'),
    None, b"", b"{}", b"[]", b"x" * (LIMIT + 1),
    # hostile numbers and strings (tests/unit/test_silver_hostile.py fuzzes many more)
    compact(http_status=10**40), compact(http_status=-(10**40)), compact(schema_version=2**31),
    compact(latency_ms=float("nan")), compact(latency_ms=float("-inf")), compact(latency_ms=10**400),
    compact(latency_ms=-0.0), compact(http_status=200.0), compact(direction={"to": "roman"}),
    compact(user_plan=["pro"]), compact(user_id="\udfff"),
]


def test_the_common_case_takes_the_vectorized_path():
    for value in SHAPED_EDGE_CASES:
        assert pc.match_substring_regex(pa.array([value], pa.binary()), _SHAPE)[0].as_py(), value
    for value in UNSHAPED_CASES:
        assert not pc.fill_null(pc.match_substring_regex(pa.array([value], pa.binary()), _SHAPE), False)[0].as_py(), value


def test_bulk_check_agrees_with_check_event_row_by_row():
    values = SHAPED_EDGE_CASES + UNSHAPED_CASES
    assert bulk(values) == one_by_one(values)
    no_kafka_time = [None] * len(values)
    assert bulk(values, no_kafka_time) == one_by_one(values, no_kafka_time)


@pytest.mark.parametrize("value", [raw()] + [v for v, _ in [
    (raw(output="MCMXCV"), 0), (raw(latency_ms=-0.5), 0), (raw(occurred_at="2024-12-25T12:06:00Z"), 0),
    (raw(http_status=10**40), 0), (raw(latency_ms=float("nan")), 0), (raw(latency_ms=float("inf")), 0),
]])
def test_bulk_check_keeps_every_reason_code(value):
    assert bulk([value]) == one_by_one([value])


FIELD_VALUES = st.sampled_from([
    None, _DROP, True, False, 0, 1, 2, 200, 422, -1, 0.5, "", "x", "free", "DE", "de", "to_roman", "from_roman",
    "/v1/to-roman", "/v1/from-roman", "OUT_OF_RANGE", "1994", "MCMXCIV", "XIV", "14", "2024-12-25T10:15:30Z",
    "2024-12-25T12:06:00.000Z", "2023-02-29T00:00:00Z", "6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e11", "conversion",
])


@given(st.lists(st.dictionaries(st.sampled_from(list(event()) + ["region", "cache_hit"]), FIELD_VALUES, max_size=4),
                min_size=1, max_size=12),
       st.booleans())
@hsettings(max_examples=150, deadline=None)
def test_bulk_check_agrees_on_mutated_events(mutations, spaced):
    """Events one to four fields away from valid: the vectorized path never disagrees with check_event."""
    values = [(raw if spaced else compact)(**m) for m in mutations]
    assert bulk(values) == one_by_one(values)


def test_bulk_check_of_an_empty_batch():
    assert check_values(pa.array([], pa.binary()), pa.array([], pa.int64()), LIMIT).type == PARSED_TYPE


# ---- frames ------------------------------------------------------------------------------------

def bronze(values, partitions=None, offsets=None, timestamps=None) -> daft.DataFrame:
    n = len(values)
    return daft.from_pydict({
        "topic": ["t"] * n,
        "partition": partitions or [0] * n,
        "offset": offsets or list(range(n)),
        "kafka_timestamp": timestamps or [KAFKA_TS] * n,
        "value": values,
        "bronze_snapshot_id": [42] * n,
    })


def test_every_record_is_either_a_fact_candidate_or_quarantined():
    checked = silver.validate(bronze([raw(), b"nope", raw(output="X"), b""]), LIMIT).collect()
    quarantine = silver.rejected(checked).to_pylist()
    assert [r["source_offset"] for r in quarantine] == [1, 2, 3]
    assert quarantine[0]["value"] == b"nope" and quarantine[0]["bronze_snapshot_id"] == 42
    assert quarantine[1]["reason_codes"] == ["WRONG_CONVERSION"] and "expected 'MCMXCIV'" in quarantine[1]["reject_detail"]
    facts = silver.valid(checked).to_pylist()
    assert len(facts) == 1 and facts[0]["event_date"] == date(2024, 12, 25) and facts[0]["source_offset"] == 0


def test_first_arrival_wins_within_a_batch():
    later, earlier = KAFKA_TS, KAFKA_TS - timedelta(minutes=1)
    frame = bronze([raw(), raw(), raw()], partitions=[2, 1, 0], offsets=[5, 9, 7], timestamps=[later, earlier, earlier])
    kept = silver.first_arrivals(silver.valid(silver.validate(frame, LIMIT))).to_pylist()
    assert [(r["source_partition"], r["source_offset"]) for r in kept] == [(0, 7)]


def test_history_drops_later_duplicates_and_yields_to_earlier_arrivals():
    batch = silver.valid(silver.validate(bronze([raw(), raw(event_id="6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e12"),
                                                 raw(event_id="6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e13")]), LIMIT))
    history = daft.from_pydict({
        "event_id": ["6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e11", "6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e12"],
        "kafka_timestamp": [KAFKA_TS - timedelta(days=2), KAFKA_TS + timedelta(days=2)],
        "source_topic": ["t", "t"],
        "source_partition": [0, 0],
        "source_offset": [0, 0],
    })
    inserts, replaced = silver.against_history(batch, silver.history_matches(batch, history))
    ids = sorted(r["event_id"][-2:] for r in inserts.to_pylist())
    assert ids == ["12", "13"]  # 11 is a later duplicate; 12 arrived before the stored copy
    assert [r["event_id"][-2:] for r in replaced.to_pylist()] == ["12"]


def test_history_compares_timestamp_then_topic_then_partition_then_offset():
    ids = [f"6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e2{i}" for i in range(5)]
    batch = silver.valid(silver.validate(bronze([raw(event_id=i) for i in ids], partitions=[1] * 5,
                                                offsets=[10] * 5), LIMIT))
    history = daft.from_pydict({
        "event_id": ids,
        "kafka_timestamp": [KAFKA_TS] * 4 + [KAFKA_TS - timedelta(microseconds=1)],
        "source_topic": ["t"] * 5,  # the batch's topic: tests/unit/test_dedup_order.py varies it
        "source_partition": [2, 1, 1, 0, 1],
        "source_offset": [0, 11, 10, 99, 10],
    })
    inserts, replaced = silver.against_history(batch, silver.history_matches(batch, history))
    # 0: lower partition wins; 1: same partition, lower offset; 2: the stored row itself (a rerun);
    # 3: the stored row has the lower partition; 4: the stored row is a microsecond earlier
    assert sorted(r["event_id"][-1] for r in inserts.to_pylist()) == ["0", "1"]
    assert sorted(r["event_id"][-1] for r in replaced.to_pylist()) == ["0", "1"]


def test_first_arrivals_keeps_single_events_and_the_first_copy_of_repeated_ones():
    a, b, c = (f"6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e3{i}" for i in range(3))
    values = [raw(event_id=a), raw(event_id=b), raw(event_id=b), raw(event_id=c), raw(event_id=b)]
    frame = bronze(values, partitions=[0, 0, 1, 0, 0], offsets=[1, 2, 3, 4, 0],
                   timestamps=[KAFKA_TS, KAFKA_TS, KAFKA_TS, KAFKA_TS, KAFKA_TS + timedelta(seconds=1)])
    kept = silver.first_arrivals(silver.valid(silver.validate(frame, LIMIT))).to_pylist()
    assert sorted((r["event_id"][-1], r["source_offset"]) for r in kept) == [("0", 1), ("1", 2), ("2", 4)]


def test_dedup_on_narrow_arrivals_then_dropping_rows_from_the_wide_facts():
    a, b = "6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e41", "6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e42"
    frame = bronze([raw(event_id=a), raw(event_id=a), raw(event_id=b)], partitions=[0, 0, 0], offsets=[2, 1, 3])
    candidates = silver.valid(silver.validate(frame, LIMIT))
    arrived = silver.arrivals(candidates)
    assert set(arrived.column_names) == {"event_id", "kafka_timestamp", "source_topic", "source_partition",
                                         "source_offset", "event_date", "user_id"}
    history = daft.from_pydict({"event_id": [b], "kafka_timestamp": [KAFKA_TS - timedelta(days=1)],
                                "source_topic": ["t"], "source_partition": [0], "source_offset": [0]})
    repeats = silver.later_copies(arrived)
    batch = silver.without(arrived, repeats)
    drop = repeats.concat(silver.superseded(batch, silver.history_matches(batch, history)))
    assert sorted(r["source_offset"] for r in drop.to_pylist()) == [2, 3]
    facts = silver.facts(silver.without(candidates, drop)).to_pylist()
    assert [(r["event_id"], r["source_offset"]) for r in facts] == [(a, 1)] and len(facts[0]) == len(silver.FACT_COLUMNS)


# ---- SCD2 users ---------------------------------------------------------------------------------

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def facts_frame(rows: list[tuple[str | None, int, str, str, str]]) -> daft.DataFrame:
    return daft.from_pydict({
        "user_id": [r[0] for r in rows],
        "occurred_at": [T0 + timedelta(minutes=r[1]) for r in rows],
        "event_id": [r[2] for r in rows],
        "user_plan": [r[3] for r in rows],
        "user_country": [r[4] for r in rows],
    })


def dimension(rows) -> list[tuple]:
    out = silver.user_versions(facts_frame(rows)).to_pylist()
    rows = [(r["user_id"], r["valid_from"], r["valid_to"], r["user_plan"], r["user_country"], r["is_current"], r["user_sk"])
            for r in out]
    return sorted(rows, key=_order)


def _order(d):
    return (d[0], d[1], d[2] is None, d[2] or T0, d[6])


def test_versions_are_maximal_runs_and_anonymous_is_ignored():
    rows = [("u1", 0, "a", "free", "DE"), ("u1", 5, "b", "free", "DE"), ("u1", 10, "c", "pro", "DE"),
            ("u1", 20, "d", "free", "DE"), (None, 3, "e", None, None)]
    dim = dimension(rows)
    assert [(d[3], d[1], d[2], d[5]) for d in dim] == [
        ("free", T0, T0 + timedelta(minutes=10), False),
        ("pro", T0 + timedelta(minutes=10), T0 + timedelta(minutes=20), False),
        ("free", T0 + timedelta(minutes=20), None, True),
    ]


def test_ties_on_occurred_at_break_by_event_id():
    dim = dimension([("u1", 0, "b", "pro", "DE"), ("u1", 0, "a", "free", "DE")])
    assert [(d[3], d[2], d[5]) for d in dim] == [("free", T0, False), ("pro", None, True)]
    assert dim[0][6] != dim[1][6]  # two versions starting at the same instant keep distinct keys


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3", None]),
        st.integers(min_value=0, max_value=40),
        st.sampled_from(["free", "pro", "enterprise"]),
        st.sampled_from(["DE", "FR"]),
    ),
    min_size=1,
    max_size=25,
)


@given(EVENTS, st.randoms(use_true_random=False), st.integers(min_value=1, max_value=4))
@hsettings(max_examples=40, deadline=None)
def test_scd2_is_the_same_for_any_arrival_order_and_batching(events, rng, batches):
    """Folding shuffled batches one at a time, as silver does, equals the dimension of all events."""
    rows = [(u, minute, f"e{i:03d}", plan, country) for i, (u, minute, plan, country) in enumerate(events)]
    expected = dimension(rows)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(rows)), min(batches - 1, len(rows) - 1))) if len(rows) > 1 else []
    seen: list = []
    dim: dict[str, list] = {}
    for chunk in [shuffled[i:j] for i, j in zip([0, *cuts], [*cuts, len(rows)])]:
        seen += chunk
        touched = {r[0] for r in chunk if r[0] is not None}
        # silver rebuilds only the touched users, from all their facts so far
        for user in touched:
            dim[user] = [d for d in dimension([r for r in seen if r[0] == user])]
    assert sorted((d for versions in dim.values() for d in versions), key=_order) == expected


def versions_frame(dim: list[tuple]) -> daft.DataFrame:
    when = pa.timestamp("us", "UTC")
    return daft.from_arrow(pa.table({
        "user_id": pa.array([d[0] for d in dim], pa.string()), "valid_from": pa.array([d[1] for d in dim], when),
        "valid_to": pa.array([d[2] for d in dim], when), "user_plan": pa.array([d[3] for d in dim], pa.string()),
        "user_country": pa.array([d[4] for d in dim], pa.string()),
    }))


def disrupted(chunk, dim: list[tuple]) -> set[str]:
    frame = silver.disrupted_users(facts_frame(chunk), versions_frame(dim))
    return set(frame.to_pydict()["user_id"])


def test_events_inside_a_version_with_its_attributes_disrupt_nothing():
    history = [("u1", 0, "a", "free", "DE"), ("u1", 10, "b", "pro", "DE"), ("u2", 0, "c", "free", "FR")]
    dim = dimension(history)
    assert disrupted([("u1", 5, "d", "free", "DE"), ("u1", 30, "e", "pro", "DE")], dim) == set()
    assert disrupted([("u1", 5, "d", "pro", "DE")], dim) == {"u1"}  # splits the free version
    assert disrupted([("u1", 10, "d", "pro", "DE")], dim) == {"u1"}  # on a boundary: the tie decides
    assert disrupted([("u2", -1, "d", "free", "FR")], dim) == {"u2"}  # before the first version
    assert disrupted([("u3", 1, "d", "free", "FR"), (None, 1, "f", None, None)], dim) == {"u3"}  # new user


@given(EVENTS, st.randoms(use_true_random=False), st.integers(min_value=1, max_value=4))
@hsettings(max_examples=40, deadline=None)
def test_incremental_scd2_rebuilds_only_disrupted_users_and_equals_the_full_dimension(events, rng, batches):
    """Silver's fold: per batch, rebuild only the users disrupted_users names; always the full answer."""
    rows = [(u, minute, f"e{i:03d}", plan, country) for i, (u, minute, plan, country) in enumerate(events)]
    shuffled = rows[:]
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(rows)), min(batches - 1, len(rows) - 1))) if len(rows) > 1 else []
    seen: list = []
    dim: list[tuple] = []
    for chunk in [shuffled[i:j] for i, j in zip([0, *cuts], [*cuts, len(rows)])]:
        seen += chunk
        touched = {r[0] for r in chunk if r[0] is not None}
        rebuild = disrupted(chunk, [d for d in dim if d[0] in touched])
        assert rebuild <= touched
        dim = [d for d in dim if d[0] not in rebuild] + dimension([r for r in seen if r[0] in rebuild])
        assert sorted(dim, key=_order) == dimension(seen)


def test_events_of_keeps_only_the_listed_users():
    facts = facts_frame([("u1", 0, "a", "free", "DE"), ("u2", 1, "b", "pro", "FR"), (None, 2, "c", None, None)])
    picked = silver.events_of(facts, daft.from_pydict({"user_id": ["u2", "u9"]})).to_pylist()
    assert [(r["user_id"], r["event_id"]) for r in picked] == [("u2", "b")]
