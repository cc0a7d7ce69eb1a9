"""A record can make silver reject it; it can never make silver stop (issue 12, defect 9).

Hostile values — integers beyond their column's type, non-finite numbers, nested objects where
scalars belong, lone surrogates — go through the bulk check (vectorized fast path, per-row fast path,
full check) and through ``silver.validate``. Nothing raises, every row is valid or rejected with a
reason, the paths agree, and valid rows carry finite, in-range values.
"""

from __future__ import annotations

import json
import math
import random

import pyarrow as pa
import pytest

from tasks.transforms import silver
from tasks.transforms.contract import FIELDS, PARSED_TYPE, REASONS, check_event, check_values
from tests.unit.test_silver_transforms import KAFKA_US, LIMIT, bronze, bulk, event, one_by_one

INT32 = (-(2**31), 2**31 - 1)


def record(**fields: str) -> bytes:
    """The contract example with some members' JSON text replaced verbatim (NaN, 1e999, 400 digits...)."""
    doc = event()
    members = [f"{json.dumps(name)}:{fields.get(name, json.dumps(value))}" for name, value in doc.items()]
    members += [f"{json.dumps(name)}:{text}" for name, text in fields.items() if name not in doc]
    return ("{" + ",".join(members) + "}").encode()


FAILED = {"success": "false", "output": "null", "error_code": '"OUT_OF_RANGE"', "input": '"4000"'}


@pytest.mark.parametrize(
    "value, code",
    [
        (record(http_status=str(10**40)), "INTEGER_OUT_OF_RANGE"),
        (record(http_status=str(-(10**40))), "INTEGER_OUT_OF_RANGE"),
        (record(http_status=str(2**31)), "INTEGER_OUT_OF_RANGE"),
        (record(http_status=str(-(2**31) - 1)), "INTEGER_OUT_OF_RANGE"),
        (record(**FAILED, http_status=str(10**40)), "INTEGER_OUT_OF_RANGE"),
        (record(http_status="1" + "0" * 400), "INTEGER_OUT_OF_RANGE"),
        (record(schema_version=str(10**40)), "INTEGER_OUT_OF_RANGE"),
        (record(schema_version=str(-(2**63))), "INTEGER_OUT_OF_RANGE"),
        (record(latency_ms="NaN"), "NON_FINITE_NUMBER"),
        (record(latency_ms="Infinity"), "NON_FINITE_NUMBER"),
        (record(latency_ms="-Infinity"), "NON_FINITE_NUMBER"),
        (record(latency_ms="1e999"), "NON_FINITE_NUMBER"),
        (record(latency_ms="-1e999"), "NON_FINITE_NUMBER"),
        (record(latency_ms="1" + "0" * 400), "NON_FINITE_NUMBER"),  # an integer no double holds
        (record(latency_ms="1" + "0" * 400 + ".5"), "NON_FINITE_NUMBER"),
        (record(http_status="200.0"), "BAD_TYPE"),
        (record(http_status="2e2"), "BAD_TYPE"),
        (record(http_status="1e20"), "BAD_TYPE"),
        (record(http_status="true"), "BAD_TYPE"),
        (record(http_status='{"code": 200}'), "BAD_TYPE"),
        (record(schema_version="1.0"), "BAD_TYPE"),
        (record(latency_ms="false"), "BAD_TYPE"),
        (record(latency_ms="[1]"), "BAD_TYPE"),
        (record(direction='{"to": "roman"}'), "BAD_TYPE"),
        (record(user_plan='["pro"]'), "BAD_TYPE"),
        (record(**{**FAILED, "error_code": '{"a": 1}'}, http_status="422"), "BAD_TYPE"),
        (record(user_id='"\\ud800"'), "BAD_TYPE"),  # a lone surrogate: no UTF-8 text holds it
        (record(input='"12\\udfff"'), "BAD_TYPE"),
        (record(client='"\\udc80web"'), "BAD_TYPE"),
        (record(user_plan='"pro\\ud800"'), "BAD_TYPE"),
        (record(latency_ms="-0.5"), "NEGATIVE_LATENCY"),
        (record(latency_ms="-1e308"), "NEGATIVE_LATENCY"),
        (record(http_status="-0"), "INCONSISTENT_ERROR"),
    ],
)
def test_hostile_values_are_rejected_with_the_same_reason_by_every_path(value, code):
    row = check_event(value, KAFKA_US, LIMIT)
    assert code in row["reason_codes"], row["reject_detail"]
    assert bulk([value]) == one_by_one([value])


@pytest.mark.parametrize("latency, stored", [("0", 0.0), ("-0", 0.0), ("-0.0", 0.0), ("0e0", 0.0), ("1e308", 1e308),
                                             (str(10**300), 1e300), ("1E-400", 0.0)])
def test_edge_latencies_that_are_still_valid(latency, stored):
    value = record(latency_ms=latency)
    row = check_event(value, KAFKA_US, LIMIT)
    assert row["reason_codes"] == [] and row["latency_ms"] == stored and math.copysign(1, row["latency_ms"]) == 1
    assert bulk([value]) == one_by_one([value])


def test_the_surrogate_pair_of_a_real_character_is_fine():
    value = record(user_id='"u-\\ud83d\\ude00"')
    assert check_event(value, KAFKA_US, LIMIT)["reason_codes"] == []
    assert bulk([value]) == one_by_one([value])


def test_the_new_codes_are_reason_codes():
    assert {"INTEGER_OUT_OF_RANGE", "NON_FINITE_NUMBER"} <= set(REASONS)


# ---- fuzz --------------------------------------------------------------------------------------

NUMBER_TEXTS = [
    "0", "-0", "0.0", "-0.0", "1", "2", "200", "400", "422", "-1", "2147483647", "2147483648", "-2147483648",
    "-2147483649", "9223372036854775807", "9223372036854775808", "-9223372036854775809", str(10**40),
    str(-(10**40)), "1" * 400, "-" + "9" * 400, "1" * 400 + ".0", "200.0", "1e20", "1e308", "1e309", "1e999",
    "-1e999", "1E-400", "3.2", "0.1234567890123", "NaN", "Infinity", "-Infinity", "2e2", "-2e-2",
]
OTHER_TEXTS = [
    "true", "false", "null", "[]", "{}", "[200]", '{"a": {"b": [1, {"c": NaN}]}}', '""', '"200"', '"NaN"',
    '"\\ud800"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"', '"\\u0000"', '"x\\ny"', '"\u00e9"', "[" * 50 + "]" * 50,
]
GOOD_TEXTS = {
    "schema_version": ["1", "2"], "http_status": ["200", "400", "422"], "latency_ms": ["3.2", "0", "12"],
    "success": ["true", "false"], "output": ['"MCMXCIV"', "null"], "error_code": ["null", '"OUT_OF_RANGE"'],
}


def hostile_record(rng: random.Random) -> bytes:
    """The contract example with one to four members replaced by hostile JSON text (or made unusual)."""
    names = list(event()) + ["region", "cache_hit", "extra"]
    fields: dict[str, str] = {}
    for name in rng.sample(names, rng.randint(1, 4)):
        pool = rng.choice([NUMBER_TEXTS, NUMBER_TEXTS, OTHER_TEXTS, GOOD_TEXTS.get(name, OTHER_TEXTS)])
        fields[name] = rng.choice(pool)
    value = record(**fields)
    if rng.random() < 0.1:  # pretty-printed, so it cannot take the vectorized path's shape
        try:
            value = json.dumps(json.loads(value), indent=1).encode()
        except ValueError:
            pass
    return value


def test_fuzzed_hostile_records_never_stop_the_check():
    rng = random.Random(12_9)
    values = [hostile_record(rng) for _ in range(3000)]
    values += [None, b"", b"NaN", b"1e999", ("1" * 400).encode(), b"[" * 100_000, b'{"a":' * 3000]
    kafka_us = [rng.choice([KAFKA_US, None]) for _ in values]

    rows = bulk(values, kafka_us)  # vectorized + per-row fast path + full check: must not raise
    assert rows == one_by_one(values, kafka_us)  # and it agrees with check_event, row by row

    out = [dict(zip(FIELDS, row)) for row in rows]
    valid = [r for r in out if not r["reason_codes"]]
    assert valid and len(valid) < len(out)
    for r in out:
        if r["reason_codes"]:
            assert set(r["reason_codes"]) <= set(REASONS) and r["reject_detail"]
            continue
        assert r["reject_detail"] is None
        assert math.isfinite(r["latency_ms"]) and r["latency_ms"] >= 0
        assert r["http_status"] in (200, 400, 422) and r["schema_version"] in (1, 2)
        assert r["numeral_value"] is None or 1 <= r["numeral_value"] <= 3999
        for name, kind in ((f.name, f.type) for f in PARSED_TYPE):
            if pa.types.is_string(kind) and r[name] is not None:
                r[name].encode("utf-8")  # representable
            if pa.types.is_integer(kind) and r[name] is not None:
                bits = kind.bit_width - 1
                assert -(2**bits) <= r[name] < 2**bits


def test_a_hostile_batch_goes_through_validate():
    rng = random.Random(40)
    values = [hostile_record(rng) for _ in range(500)] + [record(http_status=str(10**40)), record(latency_ms="NaN")]
    checked = silver.validate(bronze(values), LIMIT).collect()
    facts = silver.valid(checked).to_pydict()
    quarantined = silver.rejected(checked).to_pydict()
    assert len(facts["event_id"]) + len(quarantined["value"]) == len(values)
    assert all(math.isfinite(x) and x >= 0 for x in facts["latency_ms"])
    assert all(codes for codes in quarantined["reason_codes"])


def test_check_values_never_raises_on_a_batch_of_one_hostile_record_among_good_ones():
    good = record()
    for hostile in (record(http_status=str(10**40)), record(latency_ms="1" + "0" * 400), record(user_id='"\\ud800"')):
        out = check_values(pa.array([good, hostile, good], pa.binary()), pa.array([KAFKA_US] * 3, pa.int64()), LIMIT)
        codes = [r["reason_codes"] for r in out.to_pylist()]
        assert codes[0] == codes[2] == [] and codes[1]
