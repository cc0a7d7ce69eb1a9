"""The real path on a private stack-profile lakehouse, checked against truth from what the test sent.

Its own Iceberg REST catalog, buckets on the stack's SeaweedFS, a fresh Kafka topic, the stack's Ray
head and Prefect server (``private_stack_module``). The project's simulator sends dirty traffic
(duplicates across partitions, late events, malformed records, plan changes); the real ingest
(warm writer actors), silver and gold flows run in-process. The truth is computed in plain Python
from the topic read back with a plain consumer: the contract, the first arrival, the SCD2 plan in
force and every metric are recounted here, never taken from the code under test.

Round one: produce, run the chain, compare every layer. Round two: more traffic with late events
for days gold already holds, resends of round-one records (earlier, tied and later Kafka
timestamps, other partitions), plan changes; the incremental chain must equal the truth again.
Round three: nothing new; nothing is committed. Serving: ``lakehouse sql`` in a subprocess
answers the same per-day totals.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from tasks.catalog import open_catalog
from tasks.settings import Settings
from tasks.simulator import TrafficProfile, generate, produce
from tasks.tables import (
    ALL_TABLES,
    BRONZE_CONVERSION_EVENTS_RAW,
    GOLD_DAILY_CONVERSION_METRICS,
    GOLD_DAILY_PLAN_METRICS,
    GOLD_USER_ACTIVITY_SUMMARY,
    SILVER_CONVERSION_EVENTS_REJECTED,
    SILVER_DIM_USERS,
    SILVER_FACT_CONVERSIONS,
)
from tests.conftest import ROOT
from tests.roman_oracle import ROMAN, ROMAN_VALUE

pytestmark = pytest.mark.stack

# Recent Kafka timestamps (the broker drops records older than its 7-day retention), and a few
# minutes back, so no record's timestamp is ahead of the broker's clock.
END = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=15)
ROUND_ONE = TrafficProfile(events=2500, days=2, users=300, seed=1201, duplicate_rate=0.05, late_rate=0.05,
                           malformed_rate=0.02, wrong_conversion_rate=0.01, v2_share=0.3, end=END)
# Another seed: the same user ids with other plans and countries (plan changes), late events
# reaching back into round one's days.
ROUND_TWO = TrafficProfile(events=1200, days=1, users=300, seed=1202, duplicate_rate=0.05, late_rate=0.15,
                           malformed_rate=0.02, wrong_conversion_rate=0.01, v2_share=0.5,
                           end=END + timedelta(minutes=10))
DAILY_COUNTS = ("requests", "successes", "failures", "unique_users", "anonymous_requests")
RESENDS = 30  # round-one records sent again in round two
INGEST_BATCH = 1000  # records per micro-batch: several bronze commits per round


# ---- the truth, in plain Python ------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def read_topic(settings: Settings) -> list[Record]:
    """Every record of the topic, read back with a plain consumer (no group offsets used)."""
    topic = settings.kafka_topic
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"truth-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        left = {p for p in partitions if highs[p] > 0}
        out: list[Record] = []
        deadline = time.monotonic() + 120
        while left and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=2000, timeout=1.0):
                assert message.error() is None, message.error()
                out.append(Record(message.partition(), message.offset(), message.timestamp()[1], message.key(),
                                  message.value()))
                if message.offset() + 1 >= highs[message.partition()]:
                    left.discard(message.partition())
        assert not left, f"could not read partitions {left} of {topic} to their end"
        return out
    finally:
        consumer.close()


# The contract, as its documentation states it (tasks/transforms/contract.py is not used here).
V1_FIELDS = ("event_id", "event_type", "schema_version", "occurred_at", "user_id", "user_plan", "user_country",
             "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint", "http_status")
V2_FIELDS = ("region", "cache_hit")
FIELD_TYPES = {  # name: (JSON type, nullable)
    "event_id": (str, False), "event_type": (str, False), "user_id": (str, True), "user_plan": (str, True),
    "user_country": (str, True), "direction": (str, False), "input": (str, False), "output": (str, True),
    "success": (bool, False), "error_code": (str, True), "latency_ms": ((int, float), False),
    "endpoint": (str, False), "http_status": (int, False), "client": (str, True), "region": (str, False),
    "cache_hit": (bool, False),
}
ENDPOINTS = {"to_roman": "/v1/to-roman", "from_roman": "/v1/from-roman"}
ERROR_CODES = {"INVALID_NUMERAL", "OUT_OF_RANGE", "MALFORMED_REQUEST"}
PLANS = {"free", "pro", "enterprise"}




def _right_answer(direction: str, text: str) -> str | None:
    if direction == "to_roman":
        return ROMAN[int(text)] if re.fullmatch(r"[1-9][0-9]{0,3}", text) and int(text) <= 3999 else None
    return str(ROMAN_VALUE[text]) if text in ROMAN_VALUE else None


def _instant(text) -> datetime | None:
    if not isinstance(text, str) or "T" not in text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def reasons_of(value: bytes | None, timestamp_ms: int, max_value_bytes: int) -> set[str]:
    """Why a raw record breaks the contract; empty when it is a well-formed event."""
    if value is None:
        return {"MALFORMED_JSON"}
    if len(value) > max_value_bytes:
        return {"OVERSIZED"}
    if not value:
        return {"MALFORMED_JSON"}
    try:
        doc = json.loads(value)
    except ValueError:
        return {"MALFORMED_JSON"}
    if not isinstance(doc, dict):
        return {"NOT_AN_OBJECT"}
    out: set[str] = set()
    required = V1_FIELDS
    if "schema_version" in doc:
        version = doc["schema_version"]
        if type(version) is not int:
            out.add("BAD_TYPE")
        elif version not in (1, 2):
            out.add("UNKNOWN_SCHEMA_VERSION")
        elif version == 2:
            required = V1_FIELDS + V2_FIELDS
    if any(name not in doc for name in required):
        out.add("MISSING_FIELD")
    typed = {}
    for name, (kind, nullable) in FIELD_TYPES.items():
        if name not in doc:
            continue
        item = doc[name]
        if item is None:
            if not nullable:
                out.add("BAD_TYPE")
            continue
        fits = type(item) is bool if kind is bool else not isinstance(item, bool) and isinstance(item, kind)
        if not fits:
            out.add("BAD_TYPE")
            continue
        typed[name] = item
    if "event_id" in typed:
        try:
            uuid.UUID(typed["event_id"])
        except ValueError:
            out.add("BAD_TYPE")
    occurred = _instant(doc.get("occurred_at"))
    if "occurred_at" in doc and occurred is None:
        out.add("BAD_TYPE")
    direction = typed.get("direction")
    if typed.get("event_type", "conversion") != "conversion":
        out.add("BAD_ENUM")
    if typed.get("user_plan", "free") not in PLANS:
        out.add("BAD_ENUM")
    if not re.fullmatch(r"[A-Z]{2}", typed.get("user_country", "DE")):
        out.add("BAD_ENUM")
    if direction is not None and direction not in ENDPOINTS:
        out.add("BAD_ENUM")
        direction = None
    if typed.get("error_code", "OUT_OF_RANGE") not in ERROR_CODES:
        out.add("BAD_ENUM")
    endpoint = typed.get("endpoint")
    if endpoint is not None:
        if endpoint not in ENDPOINTS.values():
            out.add("BAD_ENUM")
        elif direction is not None and ENDPOINTS[direction] != endpoint:
            out.add("INCONSISTENT_ERROR")
    success, status = typed.get("success"), typed.get("http_status")
    if success is True:
        if typed.get("error_code") is not None or (status is not None and status != 200):
            out.add("INCONSISTENT_ERROR")
        if direction is not None and "input" in typed and typed.get("output") != _right_answer(direction, typed["input"]):
            out.add("WRONG_CONVERSION")
    elif success is False:
        if typed.get("error_code") is None or (status is not None and status not in (400, 422)) \
                or typed.get("output") is not None:
            out.add("INCONSISTENT_ERROR")
    if typed.get("latency_ms", 0) < 0:
        out.add("NEGATIVE_LATENCY")
    if occurred is not None and occurred.timestamp() * 1000 - timestamp_ms > 5 * 60 * 1000:
        out.add("FUTURE_EVENT")
    return out


@dataclass
class Truth:
    """What the topic holds, and what every layer must therefore say."""

    records: dict[tuple[int, int], Record]
    rejected: dict[tuple[int, int], set[str]]  # (partition, offset) -> reasons
    facts: dict[str, tuple[Record, dict]]  # event_id -> first arrival and its event
    daily: dict[tuple[date, str], dict[str, int]] = field(default_factory=dict)
    plans: dict[tuple[date, str], dict[str, int]] = field(default_factory=dict)
    versions: set[tuple] = field(default_factory=set)  # SCD2 rows of silver.dim_users
    users: dict[str, dict] = field(default_factory=dict)  # gold.user_activity_summary


def compute_truth(records: list[Record], max_value_bytes: int) -> Truth:
    by_position = {(r.partition, r.offset): r for r in records}
    assert len(by_position) == len(records), "the topic read back holds a position twice"
    rejected, facts = {}, {}
    for record in records:
        reasons = reasons_of(record.value, record.timestamp_ms, max_value_bytes)
        if reasons:
            rejected[(record.partition, record.offset)] = reasons
            continue
        event = json.loads(record.value)
        arrival = (record.timestamp_ms, record.partition, record.offset)  # one topic
        kept = facts.get(event["event_id"])
        if kept is None or arrival < (kept[0].timestamp_ms, kept[0].partition, kept[0].offset):
            facts[event["event_id"]] = (record, event)
    truth = Truth(by_position, rejected, facts)

    events = [event for _, event in facts.values()]
    for event in events:
        event["_at"] = _instant(event["occurred_at"]).astimezone(timezone.utc)
        event["_day"] = event["_at"].date()

    daily = defaultdict(lambda: {"requests": 0, "successes": 0, "failures": 0, "anonymous_requests": 0,
                                 "_users": set()})
    for event in events:
        row = daily[(event["_day"], event["direction"])]
        row["requests"] += 1
        row["successes" if event["success"] else "failures"] += 1
        if event["user_id"] is None:
            row["anonymous_requests"] += 1
        else:
            row["_users"].add(event["user_id"])
    truth.daily = {k: {**{n: v for n, v in row.items() if n != "_users"}, "unique_users": len(row["_users"])}
                   for k, row in daily.items()}

    # SCD2: per user, maximal runs of consecutive events (by occurred_at, event_id) with the same plan
    # and country; a version ends where the next begins. The plan in force at an event is the plan of
    # the version with valid_from <= occurred_at < valid_to.
    by_user = defaultdict(list)
    for event in events:
        if event["user_id"] is not None:
            by_user[event["user_id"]].append(event)
    in_force: dict[str, str] = {}
    for user, mine in by_user.items():
        mine.sort(key=lambda e: (e["_at"], e["event_id"]))
        starts = [e for i, e in enumerate(mine)
                  if i == 0 or (e["user_plan"], e["user_country"]) != (mine[i - 1]["user_plan"], mine[i - 1]["user_country"])]
        spans = [(s["_at"], starts[i + 1]["_at"] if i + 1 < len(starts) else None, s["user_plan"], s["user_country"])
                 for i, s in enumerate(starts)]
        truth.versions |= {(user, plan, country, start, end, end is None) for start, end, plan, country in spans}
        for e in mine:
            matching = [plan for start, end, plan, _ in spans if start <= e["_at"] and (end is None or e["_at"] < end)]
            assert len(matching) == 1, (user, e["event_id"], matching)
            in_force[e["event_id"]] = matching[0]
        days = {e["_day"] for e in mine}
        truth.users[user] = {"requests": len(mine), "successes": sum(e["success"] for e in mine),
                             "active_days": len(days), "current_plan": spans[-1][2], "current_country": spans[-1][3]}

    plans = defaultdict(lambda: {"requests": 0, "successes": 0, "_users": set()})
    for event in events:
        plan = in_force.get(event["event_id"], "anonymous")
        row = plans[(event["_day"], plan)]
        row["requests"] += 1
        row["successes"] += int(event["success"])
        if event["user_id"] is not None:
            row["_users"].add(event["user_id"])
    truth.plans = {k: {"requests": r["requests"], "successes": r["successes"], "unique_users": len(r["_users"])}
                   for k, r in plans.items()}
    return truth


# ---- the chain and what the tables say --------------------------------------------------------------

def run_chain(settings: Settings) -> dict:
    from flows.gold import gold_flow
    from flows.ingest import ingest_flow
    from flows.silver import silver_flow

    return {
        "ingest": ingest_flow(settings=settings, max_records=INGEST_BATCH, max_batches=20),
        "silver": silver_flow(settings=settings),
        "gold": gold_flow(settings=settings),
    }


def current_snapshots(settings: Settings) -> dict[str, int | None]:
    catalog = open_catalog(settings, "serving")
    out = {}
    for spec in ALL_TABLES:
        snapshot = catalog.load_table(spec.identifier).current_snapshot()
        out[spec.identifier] = snapshot.snapshot_id if snapshot else None
    return out


def read(settings: Settings, spec, snapshots: dict[str, int | None], columns: tuple[str, ...] = ("*",)) -> list[dict]:
    """A table's rows at the snapshot a round left it at (later rounds don't change what is checked)."""
    table = open_catalog(settings, "serving").load_table(spec.identifier)
    snapshot_id = snapshots[spec.identifier]
    if snapshot_id is None:
        return []
    return table.scan(snapshot_id=snapshot_id, selected_fields=columns).to_arrow().to_pylist()


@dataclass
class Round:
    truth: Truth
    sent: int  # records in the topic
    reports: dict
    snapshots: dict[str, int | None]
    verified: object  # tasks.verify.VerifyReport


def finish_round(settings: Settings, sent: int) -> Round:
    from tasks.verify import verify

    reports = run_chain(settings)
    snapshots = current_snapshots(settings)
    truth = compute_truth(read_topic(settings), settings.silver_max_value_bytes)
    return Round(truth, sent, reports, snapshots, verify(open_catalog(settings, "serving"), settings))


def resend(settings: Settings, records: list[Record]) -> int:
    """Send round-one records again, byte for byte: an earlier Kafka timestamp on another partition
    (it becomes the first arrival), the same timestamp on partition 0 (the tie goes to the lower
    partition), or a later timestamp on any partition (a plain duplicate)."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    for i, record in enumerate(records):
        mode = i % 3
        if mode == 0:
            partition, timestamp = (record.partition + 1) % 3, record.timestamp_ms - 1000
        elif mode == 1:
            partition, timestamp = 0, record.timestamp_ms
        else:
            partition, timestamp = (record.partition + i) % 3, record.timestamp_ms + 60_000
        producer.produce(settings.kafka_topic, record.value, record.key, partition=partition, timestamp=timestamp)
    assert producer.flush(60) == 0
    return len(records)


@pytest.fixture(scope="module")
def lake(private_stack_module) -> Settings:
    return private_stack_module


@pytest.fixture(scope="module")
def round_one(lake) -> Round:
    report = produce(lake, ROUND_ONE)
    assert report.events == ROUND_ONE.events and report.delivery_errors == 0
    return finish_round(lake, report.events)


@pytest.fixture(scope="module")
def round_two(lake, round_one) -> Round:
    report = produce(lake, ROUND_TWO)
    first = sorted(round_one.truth.records.values(), key=lambda r: (r.partition, r.offset))
    valid = [r for r in first if (r.partition, r.offset) not in round_one.truth.rejected]
    small_bad = [r for r in first if (r.partition, r.offset) in round_one.truth.rejected
                 and (r.value is None or len(r.value) < 10_000)]
    rng = random.Random(5)
    again = rng.sample(valid, RESENDS - 3) + rng.sample(small_bad, 3)
    resent = resend(lake, again)
    return finish_round(lake, round_one.sent + report.events + resent)


@pytest.fixture(scope="module")
def round_three(lake, round_two) -> Round:
    return finish_round(lake, round_two.sent)


# ---- the checks ------------------------------------------------------------------------------------

def assert_layers_equal_truth(settings: Settings, done: Round) -> None:
    truth, snapshots = done.truth, done.snapshots
    assert len(truth.records) == done.sent, "the topic does not hold what the test sent"

    # bronze: every record exactly once, byte for byte
    bronze = read(settings, BRONZE_CONVERSION_EVENTS_RAW, snapshots,
                  ("topic", "partition", "offset", "kafka_timestamp", "key", "value"))
    positions = Counter((r["partition"], r["offset"]) for r in bronze)
    assert not [p for p, n in positions.items() if n > 1], "a record is in bronze twice"
    assert set(positions) == set(truth.records)
    assert {r["topic"] for r in bronze} == {settings.kafka_topic}
    for row in bronze:
        sent = truth.records[(row["partition"], row["offset"])]
        assert (row["value"], row["key"], _millis(row["kafka_timestamp"])) == \
               (sent.value, sent.key, sent.timestamp_ms), (row["partition"], row["offset"])

    # silver: the distinct well-formed events at their first arrival, and the malformed with why
    facts = read(settings, SILVER_FACT_CONVERSIONS, snapshots,
                 ("event_id", "source_partition", "source_offset", "occurred_at", "user_id", "user_plan",
                  "direction", "success"))
    assert len(facts) == len({f["event_id"] for f in facts}), "an event_id is in silver twice"
    got = {f["event_id"]: (f["source_partition"], f["source_offset"]) for f in facts}
    want = {event_id: (record.partition, record.offset) for event_id, (record, _) in truth.facts.items()}
    assert got.keys() == want.keys(), (f"{len(got.keys() - want.keys())} facts too many, "
                                       f"{len(want.keys() - got.keys())} missing")
    wrong_arrival = {e: (got[e], want[e]) for e in want if got[e] != want[e]}
    assert not wrong_arrival, f"{len(wrong_arrival)} facts are not the first arrival, e.g. {list(wrong_arrival.items())[:3]}"
    for f in facts:
        event = truth.facts[f["event_id"]][1]
        assert (f["occurred_at"], f["user_id"], f["user_plan"], f["direction"], f["success"]) == \
               (event["_at"], event["user_id"], event["user_plan"], event["direction"], event["success"])
    rejected = read(settings, SILVER_CONVERSION_EVENTS_REJECTED, snapshots,
                    ("source_partition", "source_offset", "reason_codes"))
    quarantined = {(r["source_partition"], r["source_offset"]): set(r["reason_codes"]) for r in rejected}
    assert len(quarantined) == len(rejected), "a record is quarantined twice"
    assert quarantined.keys() == truth.rejected.keys(), (
        f"quarantined but well-formed: {sorted(quarantined.keys() - truth.rejected.keys())[:5]}; "
        f"malformed but not quarantined: {sorted(truth.rejected.keys() - quarantined.keys())[:5]}")
    other_reasons = {p: (quarantined[p], truth.rejected[p]) for p in quarantined if quarantined[p] != truth.rejected[p]}
    assert not other_reasons, f"reasons differ (silver, truth): {list(other_reasons.items())[:5]}"

    versions = read(settings, SILVER_DIM_USERS, snapshots,
                    ("user_id", "user_plan", "user_country", "valid_from", "valid_to", "is_current"))
    got_versions = {(v["user_id"], v["user_plan"], v["user_country"], v["valid_from"], v["valid_to"], v["is_current"])
                    for v in versions}
    assert len(versions) == len(got_versions) and got_versions == truth.versions, (
        sorted(got_versions - truth.versions)[:3], sorted(truth.versions - got_versions)[:3])

    # gold: recounts of the truth
    daily = read(settings, GOLD_DAILY_CONVERSION_METRICS, snapshots)
    assert len(daily) == len({(r["event_date"], r["direction"]) for r in daily})
    got_daily = {(r["event_date"], r["direction"]): {k: r[k] for k in DAILY_COUNTS} for r in daily}
    assert got_daily == truth.daily, _difference(got_daily, truth.daily)
    plans = read(settings, GOLD_DAILY_PLAN_METRICS, snapshots)
    got_plans = {(r["event_date"], r["user_plan"]): {"requests": r["requests"], "successes": r["successes"],
                                                     "unique_users": r["unique_users"]} for r in plans}
    assert len(plans) == len(got_plans) and got_plans == truth.plans, _difference(got_plans, truth.plans)
    summary = read(settings, GOLD_USER_ACTIVITY_SUMMARY, snapshots)
    got_users = {r["user_id"]: {k: r[k] for k in ("requests", "successes", "active_days", "current_plan",
                                                  "current_country")} for r in summary}
    assert len(summary) == len(got_users) and got_users == truth.users, _difference(got_users, truth.users)

    assert done.verified.ok, done.verified.first_failure
    accounted = done.verified.check("silver.records_accounted")
    assert not accounted.warning, accounted.detail


def _millis(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def _difference(got: dict, want: dict) -> str:
    keys = sorted(set(got) | set(want), key=str)
    diff = [(k, got.get(k), want.get(k)) for k in keys if got.get(k) != want.get(k)]
    return f"{len(diff)} keys differ (key, table, truth), e.g. {diff[:4]}"


def test_round_one_every_layer_equals_the_truth_of_what_was_sent(lake, round_one):
    truth, reports = round_one.truth, round_one.reports
    # the scenario is what it says: dirty traffic on several partitions
    kinds = Counter(r.kind for r in generate(ROUND_ONE))
    assert kinds["duplicate"] and kinds["late"] and kinds["malformed"] and kinds["wrong_conversion"]
    assert len({r.partition for r in truth.records.values()}) == 3
    assert any("OVERSIZED" in reasons for reasons in truth.rejected.values())
    assert len(truth.rejected) >= kinds["malformed"] + kinds["wrong_conversion"]
    assert len(truth.facts) < len(truth.records) - len(truth.rejected)  # duplicates were sent
    assert any(len(set(v[1] for v in truth.versions if v[0] == user)) > 1 for user in truth.users)  # plan changes

    assert reports["ingest"]["total_records"] == round_one.sent and reports["ingest"]["lag_left"] == 0
    assert reports["ingest"]["batches"] >= 3  # several bronze commits
    silver = reports["silver"]
    assert silver["bronze_records"] == round_one.sent
    assert (silver["facts"], silver["rejected"]) == (len(truth.facts), len(truth.rejected))
    assert silver["facts"] + silver["rejected"] + silver["duplicates_dropped"] == round_one.sent
    assert reports["gold"]["committed"]
    assert_layers_equal_truth(lake, round_one)


def test_round_two_late_events_resends_and_plan_changes_keep_gold_equal_to_the_truth(lake, round_one, round_two):
    first, second = round_one.truth, round_two.truth
    new_days = {event["_day"] for event_id, (_, event) in second.facts.items() if event_id not in first.facts}
    assert new_days & {event["_day"] for _, event in first.facts.values()}, "no late event for a day gold held"
    moved = [e for e, (record, _) in second.facts.items()
             if e in first.facts and (record.partition, record.offset) != (first.facts[e][0].partition,
                                                                           first.facts[e][0].offset)]
    assert moved, "no resend arrived before the stored copy"

    reports = round_two.reports
    assert reports["ingest"]["total_records"] == round_two.sent - round_one.sent
    silver = reports["silver"]
    assert silver["bronze_records"] == round_two.sent - round_one.sent
    assert silver["replaced_by_earlier_arrival"] == len(moved)
    assert silver["facts"] == len(second.facts) - len(first.facts)
    assert silver["rejected"] == len(second.rejected) - len(first.rejected)
    assert reports["gold"]["committed"] and reports["gold"]["full"] is False
    assert_layers_equal_truth(lake, round_two)


def test_round_three_with_nothing_new_commits_nothing(lake, round_two, round_three):
    assert round_three.reports["ingest"]["total_records"] == 0
    assert round_three.reports["silver"]["committed"] == {}
    assert round_three.reports["gold"]["committed"] == {}
    assert round_three.snapshots == round_two.snapshots, "a run with nothing new committed a snapshot"
    catalog = open_catalog(lake, "serving")
    for spec, key in ((BRONZE_CONVERSION_EVENTS_RAW, ("partition", "offset")), (SILVER_FACT_CONVERSIONS, ("event_id",)),
                      (SILVER_CONVERSION_EVENTS_REJECTED, ("source_partition", "source_offset")),
                      (SILVER_DIM_USERS, ("user_sk",)),
                      (GOLD_DAILY_CONVERSION_METRICS, ("event_date", "direction")),
                      (GOLD_DAILY_PLAN_METRICS, ("event_date", "user_plan")), (GOLD_USER_ACTIVITY_SUMMARY, ("user_id",))):
        rows = catalog.load_table(spec.identifier).scan(selected_fields=key).to_arrow().to_pylist()
        assert len({tuple(r[k] for k in key) for r in rows}) == len(rows), f"{spec.identifier}: a key twice"
    assert_layers_equal_truth(lake, round_three)


def test_lakehouse_sql_serves_the_same_daily_totals(lake, round_three):
    """`lakehouse sql` in a subprocess, configured only by the private lakehouse's LAKEHOUSE_* variables."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}, **lake.as_env()}

    def sql(query: str) -> dict[str, dict]:
        result = subprocess.run([sys.executable, "-m", "flows.cli", "sql", query, "--format", "json"], env=env,
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        return {str(r.pop("event_date")): r for r in rows}

    truth = defaultdict(lambda: {"requests": 0, "successes": 0})
    for (day, _), row in round_three.truth.daily.items():
        truth[day.isoformat()]["requests"] += row["requests"]
        truth[day.isoformat()]["successes"] += row["successes"]
    gold = sql("SELECT event_date, sum(requests) AS requests, sum(successes) AS successes "
               "FROM gold.daily_conversion_metrics GROUP BY event_date")
    assert gold == dict(truth)
    silver = sql("SELECT event_date, count(*) AS requests FROM silver.fact_conversions GROUP BY event_date")
    assert silver == {day: {"requests": row["requests"]} for day, row in truth.items()}


def test_an_empty_topic_commits_nothing_anywhere(private_stack):
    """A lakehouse of its own (function scope): an empty topic leaves every table without a snapshot."""
    from tasks.verify import verify

    reports = run_chain(private_stack)
    assert reports["ingest"]["total_records"] == 0 and reports["ingest"]["batches"] == 0
    assert reports["silver"]["committed"] == {} and reports["gold"]["committed"] == {}
    assert set(current_snapshots(private_stack).values()) == {None}
    # load_settings() in this process (as in the CLI) finds the private lakehouse too
    assert (os.environ["LAKEHOUSE_CATALOG_URI"], os.environ["LAKEHOUSE_KAFKA_TOPIC"]) == \
        (private_stack.catalog_uri, private_stack.kafka_topic)
    checked = verify(open_catalog(private_stack, "serving"), private_stack)
    assert checked.ok, checked.first_failure
