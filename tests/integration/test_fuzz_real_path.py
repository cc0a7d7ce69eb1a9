"""Fuzzed input on the real path (issue "Security", item "Fuzzed input").

A few hundred adversarial records (arbitrary bytes, other encodings, 10 000 levels of nesting,
10**400, 1e309, NaN, lone surrogates, duplicate keys, values just under and over the size limit,
every field with every wrong type) and some valid events go to a fresh Kafka topic of a private
stack-profile lakehouse (``private_stack``: its own REST catalog, buckets and topic, the stack's
Ray head and Prefect server). The real ingest and silver flows run in-process. Then:

- bronze holds every record, byte for byte, exactly once;
- facts + rejected == produced, each record once, keyed by the Kafka position its delivery report
  gave this test;
- exactly the records the contract (``judge`` from tests/unit/test_contract_fuzz.py, a plain-Python
  reading of the contract) finds valid are facts, with their values; every other one is quarantined
  with documented reasons, its raw bytes and a detail.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Producer

from tasks.catalog import open_catalog
from tasks.settings import Settings
from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS
from tests.unit.test_contract_fuzz import (
    BOM,
    DOCUMENTED_REASONS,
    EPOCH,
    FIXED,
    GENERIC,
    KINDS,
    NEAR_TEXTS,
    ROMAN,
    join,
    judge,
    members,
)

pytestmark = pytest.mark.stack

SEED = 20_417
MUTATED = 260  # valid events with one member replaced, dropped, repeated or added
VALID = 60


def valid_event(rng: random.Random, now: datetime) -> dict:
    """A valid event that happened in the last two days (before its Kafka timestamp)."""
    occurred = now - timedelta(minutes=rng.randrange(1, 2 * 24 * 60), microseconds=rng.randrange(1_000_000))
    n = rng.randrange(1, 4000)
    direction = rng.choice(["to_roman", "from_roman"])
    success = rng.random() < 0.8
    doc = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "event_type": "conversion",
        "schema_version": rng.choice([1, 2]),
        "occurred_at": occurred.isoformat(timespec=rng.choice(["seconds", "milliseconds", "microseconds"]))
        .replace("+00:00", rng.choice(["Z", "+00:00"])),
        "user_id": rng.choice([None, f"u-{rng.randrange(50)}", "\u00fc-\U0001f600", "nul\x00inside"]),
        "user_plan": None, "user_country": None, "direction": direction,
    }
    if doc["user_id"] is not None:
        doc.update(user_plan=rng.choice(["free", "pro", "enterprise"]), user_country=rng.choice(["DE", "FR", "US"]))
    if success:
        doc.update(input=str(n) if direction == "to_roman" else ROMAN[n],
                   output=ROMAN[n] if direction == "to_roman" else str(n), success=True, error_code=None)
    else:
        doc.update(input=rng.choice(["0", "4000", "IIII", "abc", ""]), output=None, success=False,
                   error_code=rng.choice(["INVALID_NUMERAL", "OUT_OF_RANGE", "MALFORMED_REQUEST"]))
    doc.update(latency_ms=rng.choice([0, 3.2, 12, 1e-300, 1e308]),
               endpoint="/v1/to-roman" if direction == "to_roman" else "/v1/from-roman",
               http_status=200 if success else rng.choice([400, 422]), client=rng.choice([None, "web", "cli"]))
    if doc["schema_version"] == 2:
        doc.update(region=rng.choice(["eu-west-1", ""]), cache_hit=rng.random() < 0.5)
    return doc


def mutated(rng: random.Random, doc: dict) -> bytes:
    pairs = members(doc)
    name = rng.choice(list(KINDS))
    key = json.dumps(name).encode()
    text = rng.choice(NEAR_TEXTS[name] if rng.random() < 0.5 else GENERIC)
    at = next((i for i, (k, _) in enumerate(pairs) if k == key), None)
    how = rng.choice(["replace", "replace", "replace", "drop", "duplicate", "extra"])
    if how == "replace" or at is None:
        pairs = [(k, text if k == key else v) for k, v in pairs] + ([(key, text)] if at is None else [])
    elif how == "drop":
        del pairs[at]
    elif how == "duplicate":
        pairs.insert(rng.randrange(len(pairs) + 1), (key, text))
    else:
        pairs.insert(rng.randrange(len(pairs) + 1), (rng.choice([b'"extra"', b'"\\ud800"', b'""']), text))
    return join(pairs)


def adversarial_batch(limit: int, now: datetime) -> list[bytes | None]:
    rng = random.Random(SEED)
    values: list[bytes | None] = [json.dumps(valid_event(rng, now)).encode() for _ in range(VALID // 2)]
    values += [json.dumps(valid_event(rng, now), separators=(",", ":")).encode() for _ in range(VALID // 2)]
    values += [mutated(rng, valid_event(rng, now)) for _ in range(MUTATED)]
    values += list(FIXED)
    text = json.dumps(valid_event(rng, now))
    values += [text.encode("utf-16"), text.encode("utf-16-le"), text.encode("utf-32"), BOM + text.encode(),
               text.encode() + b"\x00", text.encode()[:-1], b"[" + text.encode() + b"]", json.dumps(text).encode(),
               text.encode()[:-1] + b',"extra":NaN}', text.encode()[:-1] + b',"user_plan":"gold"}']
    # just under, at and over silver_max_value_bytes: a valid event with a long client
    for size in (limit - 1, limit, limit + 1):
        doc = {**valid_event(rng, now), "client": ""}
        base = len(json.dumps(doc, separators=(",", ":")))
        values.append(json.dumps({**doc, "client": "c" * (size - base)}, separators=(",", ":")).encode())
    values += [rng.randbytes(rng.randrange(1, 300)) for _ in range(20)]
    return values


def produce(settings: Settings, values: list[bytes | None]) -> dict[tuple[int, int], tuple[bytes | None, int]]:
    """Send every value; returns (partition, offset) -> (value, Kafka timestamp in ms) from the delivery reports."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all",
                         "message.max.bytes": 8 * 1024 * 1024})
    delivered: dict[tuple[int, int], tuple[bytes | None, int]] = {}
    errors: list = []

    def report(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[(msg.partition(), msg.offset())] = (msg.value(), msg.timestamp()[1])

    rng = random.Random(SEED + 1)
    for i, value in enumerate(values):
        key = None if i % 4 == 0 else rng.randbytes(rng.randrange(0, 12))
        producer.produce(settings.kafka_topic, value, key, partition=i % 3, on_delivery=report)
        producer.poll(0)
    assert producer.flush(120) == 0 and not errors, errors[:3]
    assert len(delivered) == len(values)
    return delivered


def rows(settings: Settings, spec, columns: tuple[str, ...]) -> list[dict]:
    table = open_catalog(settings, "serving").load_table(spec.identifier)
    if table.current_snapshot() is None:
        return []
    return table.scan(selected_fields=columns).to_arrow().to_pylist()


def test_fuzzed_records_land_in_bronze_and_each_once_in_facts_or_quarantine(private_stack):
    from flows.ingest import ingest_flow
    from flows.silver import silver_flow

    settings = private_stack
    limit = settings.silver_max_value_bytes
    now = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    values = adversarial_batch(limit, now)
    # Valid events are deduplicated by event_id: keep only the first of an id (a pool value such as the
    # nil UUID can come up twice), so facts + rejected == produced holds exactly.
    seen_ids: set[str] = set()
    kept = []
    for value in values:
        fact = judge(value, None, limit).fact
        if fact is not None:
            if fact["event_id"] in seen_ids:
                continue
            seen_ids.add(fact["event_id"])
        kept.append(value)
    values = kept
    assert len(values) >= 300
    sent = produce(settings, values)

    ingest = ingest_flow(settings=settings, max_records=1000, max_batches=20)
    assert ingest["total_records"] == len(sent) and ingest["lag_left"] == 0
    promoted = silver_flow(settings=settings)
    assert promoted["bronze_records"] == len(sent)
    assert promoted["duplicates_dropped"] == 0
    assert promoted["facts"] + promoted["rejected"] == len(sent)

    # bronze: every record exactly once, byte for byte
    bronze = rows(settings, BRONZE_CONVERSION_EVENTS_RAW, ("topic", "partition", "offset", "kafka_timestamp", "value"))
    positions = Counter((r["partition"], r["offset"]) for r in bronze)
    assert positions == Counter(sent.keys()), "bronze does not hold every produced record exactly once"
    for r in bronze:
        value, timestamp_ms = sent[(r["partition"], r["offset"])]
        assert r["topic"] == settings.kafka_topic and r["value"] == value
        assert (r["kafka_timestamp"] - EPOCH) // timedelta(milliseconds=1) == timestamp_ms

    # silver: facts + rejected == produced, each record once
    facts = rows(settings, SILVER_FACT_CONVERSIONS, ("event_id", "source_partition", "source_offset", "occurred_at",
                                                     "input", "output", "latency_ms", "http_status", "user_id"))
    rejected = rows(settings, SILVER_CONVERSION_EVENTS_REJECTED,
                    ("reason_codes", "reject_detail", "value", "source_partition", "source_offset"))
    landed = Counter((r["source_partition"], r["source_offset"]) for r in facts + rejected)
    assert landed == Counter(sent.keys()), (
        f"missing: {sorted(set(sent) - set(landed))[:5]}, twice: {[p for p, n in landed.items() if n > 1][:5]}, "
        f"unknown: {sorted(set(landed) - set(sent))[:5]}")

    judged = {position: judge(value, timestamp_ms * 1000, limit) for position, (value, timestamp_ms) in sent.items()}
    valid = {p for p, j in judged.items() if not j.reasons}
    assert len(valid) >= VALID, "the batch has fewer valid events than it was made with"
    in_facts = {(f["source_partition"], f["source_offset"]): f for f in facts}
    assert in_facts.keys() == valid, (f"valid but quarantined: {sorted(valid - in_facts.keys())[:5]}, "
                                      f"facts that break the contract: {sorted(in_facts.keys() - valid)[:5]}")
    for position, f in in_facts.items():
        want = judged[position].fact
        got = {**f, "occurred_at_us": (f["occurred_at"] - EPOCH) // timedelta(microseconds=1)}
        for name in ("event_id", "occurred_at_us", "input", "output", "latency_ms", "http_status", "user_id"):
            assert got[name] == want[name], (position, name, got[name], want[name])
    for r in rejected:
        position = (r["source_partition"], r["source_offset"])
        codes = r["reason_codes"]
        assert codes and set(codes) <= DOCUMENTED_REASONS, (position, codes)
        assert judged[position].reasons <= set(codes), (position, judged[position].reasons, codes, r["reject_detail"])
        assert r["reject_detail"], (position, codes)
        assert r["value"] == sent[position][0], position
