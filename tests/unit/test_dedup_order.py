"""First arrival wins by a total order: (Kafka timestamp, topic, partition, offset).

The same event can reach silver from two topics with the same Kafka timestamp, partition and offset;
without the topic those two arrivals tie, and a tie kept both rows (issue 12, defect 7). These tests
drive the dedup transforms the way ``tasks.silver_jobs.new_facts`` chains them, batch after batch,
against an in-memory stand-in for silver.fact_conversions.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import daft
import pyarrow as pa

from tasks.transforms import silver

T = datetime(2024, 12, 25, 12, 0, tzinfo=timezone.utc)
DAY = date(2024, 12, 25)
# Topic names that sort differently as strings than naive keys would: prefixes, '.', '-', '_', case.
TOPICS = ("a", "ab", "a.b", "a-b", "a_b", "B", "b", "conversion-events", "conversion-events-replay")
ARRIVAL_TYPES = {
    "event_id": pa.string(), "kafka_timestamp": pa.timestamp("us", "UTC"), "source_topic": pa.string(),
    "source_partition": pa.int32(), "source_offset": pa.int64(),
}
Row = tuple  # (event_id, kafka_timestamp, topic, partition, offset)


def candidates(rows: list[Row]) -> daft.DataFrame:
    """Valid fact candidates as ``silver.valid`` yields them (the columns dedup reads, and a payload)."""
    return daft.from_arrow(pa.table({
        **{name: pa.array([r[i] for r in rows], kind) for i, (name, kind) in enumerate(ARRIVAL_TYPES.items())},
        "event_date": pa.array([DAY] * len(rows), pa.date32()),
        "user_id": pa.array([None] * len(rows), pa.string()),
        "payload": pa.array([f"{r[2]}/{r[3]}/{r[4]}" for r in rows], pa.string()),
    }))


def history_frame(stored: dict[str, Row]) -> daft.DataFrame:
    """What ``new_facts`` reads from silver.fact_conversions for the batch's days."""
    rows = list(stored.values())
    return daft.from_arrow(pa.table(
        {name: pa.array([r[i] for r in rows], kind) for i, (name, kind) in enumerate(ARRIVAL_TYPES.items())}
    ))


def as_rows(table: pa.Table) -> list[Row]:
    d = table.to_pydict()
    return list(zip(d["event_id"], d["kafka_timestamp"], d["source_topic"], d["source_partition"], d["source_offset"]))


def promote(stored: dict[str, Row], batch_rows: list[Row]) -> int:
    """One silver promotion of ``batch_rows``, chained as ``new_facts`` chains the transforms; then
    the flow's commit: delete the replaced ids, append the rows. Returns how many it replaced."""
    facts = candidates(batch_rows)
    arrived = silver.arrivals(facts).collect()
    drop = silver.later_copies(arrived).collect()
    batch = silver.without(arrived, drop).collect()
    replaced: list[str] = []
    if stored:
        matches = silver.history_matches(batch, history_frame(stored)).collect()
        replaced = sorted(set(silver.against_history(batch, matches)[1].to_pydict()["event_id"]))
        drop = drop.concat(silver.superseded(batch, matches))
    rows = as_rows(silver.without(facts, drop).to_arrow())
    for event_id in replaced:
        del stored[event_id]
    for row in rows:
        assert row[0] not in stored, f"{row[0]} appended while silver still holds it"
        stored[row[0]] = row
    return len(replaced)


def first_arrival(row: Row) -> tuple:
    """The order, computed independently: Kafka timestamp, then topic, then partition, then offset."""
    _, ts, topic, partition, offset = row
    return (ts, topic, partition, offset)


# ---- the defect, named -------------------------------------------------------------------------

def test_two_topics_tied_on_timestamp_partition_and_offset_keep_one_row_within_a_batch():
    rows = [("e1", T, "b", 0, 7), ("e1", T, "a", 0, 7), ("e1", T, "ab", 0, 7)]
    kept = as_rows(silver.first_arrivals(candidates(rows)).to_arrow())
    assert kept == [("e1", T, "a", 0, 7)]


def test_later_copies_name_the_topic_so_the_winner_is_not_dropped_with_them():
    rows = [("e1", T, "b", 0, 7), ("e1", T, "a", 0, 7)]
    later = silver.later_copies(silver.arrivals(candidates(rows))).to_pylist()
    assert [(r["source_topic"], r["source_partition"], r["source_offset"]) for r in later] == [("b", 0, 7)]


def test_topic_orders_before_partition_and_after_the_timestamp():
    rows = [("e1", T, "b", 0, 0), ("e1", T, "a", 9, 9),  # same instant: topic decides, not partition
            ("e2", T, "a", 0, 0), ("e2", T - timedelta(microseconds=1), "z", 9, 9)]  # timestamp first
    kept = sorted(as_rows(silver.first_arrivals(candidates(rows)).to_arrow()))
    assert kept == [("e1", T, "a", 9, 9), ("e2", T - timedelta(microseconds=1), "z", 9, 9)]


def test_topic_prefixes_sort_as_strings():
    rows = [("e1", T, "ab", 0, 0), ("e1", T, "a", 5, 5), ("e2", T, "a.b", 0, 0), ("e2", T, "a", 1, 1),
            ("e3", T, "conversion-events-replay", 0, 0), ("e3", T, "conversion-events", 3, 3)]
    kept = sorted(as_rows(silver.first_arrivals(candidates(rows)).to_arrow()))
    assert [r[2] for r in kept] == ["a", "a", "conversion-events"]


def test_history_compares_the_topic_on_a_tie():
    stored = {"e1": ("e1", T, "b", 0, 7), "e2": ("e2", T, "a", 0, 7), "e3": ("e3", T, "a", 0, 7)}
    batch = [("e1", T, "a", 0, 7), ("e2", T, "b", 0, 7), ("e3", T, "a", 0, 7)]
    facts = candidates(batch)
    inserts, replaced = silver.against_history(facts, silver.history_matches(facts, history_frame(stored)))
    # e1: the batch's topic sorts first, it replaces the stored row; e2: the stored one came first;
    # e3: the stored row itself (a rerun)
    assert as_rows(inserts.select(*ARRIVAL_TYPES).to_arrow()) == [("e1", T, "a", 0, 7)]
    assert replaced.to_pydict()["event_id"] == ["e1"]


def test_promotions_of_tied_arrivals_keep_one_row_per_event():
    stored: dict[str, Row] = {}
    promote(stored, [("e1", T, "b", 0, 7)])
    promote(stored, [("e1", T, "a", 0, 7), ("e1", T, "c", 0, 7)])
    promote(stored, [("e1", T, "b", 0, 7)])  # the first batch again
    assert stored == {"e1": ("e1", T, "a", 0, 7)}


# ---- the property ------------------------------------------------------------------------------

def random_arrivals(rng: random.Random, prefix: str) -> list[Row]:
    """Kafka records (each (topic, partition, offset) once) carrying a few event_ids many times, with
    exact ties on (timestamp, partition, offset) across topics, in a random arrival order."""
    ids = [f"{prefix}-{i}" for i in range(rng.randint(1, 4))]
    instants = [T + timedelta(microseconds=rng.randint(0, 3)) for _ in range(3)]
    rows: list[Row] = []
    used: set[tuple] = set()
    for _ in range(rng.randint(1, 10)):
        record = (rng.choice(ids), rng.choice(instants), rng.choice(TOPICS), rng.randint(0, 2), rng.randint(0, 3))
        copies = [record]
        if rng.random() < 0.5:  # the defect: the same event, same instant, partition and offset, another topic
            copies += [(record[0], record[1], topic, record[3], record[4]) for topic in rng.sample(TOPICS, 2)]
        for row in copies:
            if row[2:] not in used:
                used.add(row[2:])
                rows.append(row)
    rng.shuffle(rows)
    return rows


def random_cuts(rng: random.Random, n: int, batches: int) -> list[list[int]]:
    """Consecutive slices of range(n): at most ``batches`` of them, padded with empty ones."""
    cuts = sorted(rng.sample(range(1, n), min(rng.randint(0, batches - 1), n - 1))) if n > 1 else []
    slices = [list(range(i, j)) for i, j in zip([0, *cuts], [*cuts, n])]
    return slices + [[] for _ in range(batches - len(slices))]


def fold(worlds: list[list[Row]], rng: random.Random, batches: int) -> tuple[dict[str, Row], int]:
    """Promote every world in random consecutive batches. Worlds have disjoint event_ids, so their
    k-th batches go through one promotion together (each world keeps its own cuts). Returns silver's
    rows and how many stored rows an earlier arrival replaced."""
    cuts = [random_cuts(rng, len(rows), batches) for rows in worlds]
    stored: dict[str, Row] = {}
    replaced = 0
    for k in range(batches):
        batch = [rows[i] for rows, slices in zip(worlds, cuts) for i in slices[k]]
        if batch:
            replaced += promote(stored, batch)
    return stored, replaced


def test_dedup_keeps_the_minimum_arrival_of_every_event_however_the_rows_are_batched():
    rng = random.Random(20241225)
    worlds = [random_arrivals(rng, f"w{w}") for w in range(1000)]
    expected: dict[str, Row] = {}
    for row in (r for rows in worlds for r in rows):
        if row[0] not in expected or first_arrival(row) < first_arrival(expected[row[0]]):
            expected[row[0]] = row
    assert any(len({(r[1], r[3], r[4]) for r in rows if r[0] == e}) < sum(r[0] == e for r in rows)
               for rows in worlds for e in {r[0] for r in rows}), "the generator makes cross-topic ties"

    whole, _ = fold(worlds, rng, batches=1)
    assert whole == expected
    for _ in range(3):
        batched, replaced = fold(worlds, rng, batches=5)
        assert batched == expected
        assert replaced, "later batches brought earlier arrivals, which replaced stored rows"
