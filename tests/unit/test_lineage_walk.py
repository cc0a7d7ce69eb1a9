"""The lineage walks on hand-built snapshot chains: what a table state was built from, down to the
Kafka offsets, and where a Kafka range went. Expected answers are worked out by hand below."""

from __future__ import annotations

import json

import pytest

from tasks.commits import OFFSETS_KEY, REPORT_KEY
from tasks.lineage.render import to_dot, to_mermaid
from tasks.lineage.walk import (
    LineageError,
    OffsetRange,
    SnapshotRecord,
    bronze_ranges,
    compress,
    downstream_tree,
    kafka_downstream,
    parse_range,
    upstream_tree,
    where_tree,
)
from tasks.offsets import RESET_KEY

BRONZE, FACTS, USERS, DAILY = "bronze.raw", "silver.facts", "silver.users", "gold.daily"


def _offsets(**partitions: int) -> str:
    return json.dumps({"t": {p[1:]: o for p, o in partitions.items()}})


def _chain(*summaries: dict, start: int = 1) -> list[SnapshotRecord]:
    """Snapshots start, start+1, ... each the parent of the next, with these summaries."""
    return [SnapshotRecord(start + i, start + i - 1 if i else None, i + 1, 1_000 * (start + i), s)
            for i, s in enumerate(summaries)]


def _up(table: str, snapshot: int) -> dict:
    return {f"lakehouse.upstream.{table}": str(snapshot)}


@pytest.fixture
def histories():
    # bronze 1: t[0] 0..4, t[1] 0..2 (report says both started at 0)
    # bronze 2: t[0] 5..8 (report says partition 0 started at 5; partition 1 did not move)
    # bronze 3: an audited reset of t[0] to 20: no records
    # bronze 4: no report: t[0] 20..21 and t[1] 3..3, from bronze 3's next offsets
    bronze = _chain(
        {OFFSETS_KEY: _offsets(p0=5, p1=3), REPORT_KEY: json.dumps({"topic": "t", "offsets_from": {"0": 0, "1": 0}})},
        {OFFSETS_KEY: _offsets(p0=9, p1=3), REPORT_KEY: json.dumps({"topic": "t", "offsets_from": {"0": 5}})},
        {OFFSETS_KEY: _offsets(p0=20, p1=3), RESET_KEY: "[]"},
        {OFFSETS_KEY: _offsets(p0=22, p1=4)},
    )
    # facts 101 <- bronze 1, 102 <- bronze 2, 103 a compaction (no summary), 104 <- bronze 4
    facts = _chain(_up(BRONZE, 1), _up(BRONZE, 2), {}, _up(BRONZE, 4), start=101)
    users = _chain(_up(BRONZE, 2), start=201)
    # gold 301 <- facts 101, 302 <- facts 103 (after the compaction) and users 201
    daily = _chain(_up(FACTS, 101), {**_up(FACTS, 103), **_up(USERS, 201)}, start=301)
    return {BRONZE: bronze, FACTS: facts, USERS: users, DAILY: daily}


def test_bronze_ranges_start_where_the_batch_started_and_a_reset_appends_nothing(histories):
    b = histories[BRONZE]
    assert bronze_ranges(b, 1) == (OffsetRange("t", 0, 0, 4), OffsetRange("t", 1, 0, 2))
    assert bronze_ranges(b, 2) == (OffsetRange("t", 0, 5, 8),)
    assert bronze_ranges(b, 3) == ()
    assert bronze_ranges(b, 4) == (OffsetRange("t", 0, 20, 21), OffsetRange("t", 1, 3, 3))


def test_a_gold_state_walks_down_to_its_silver_and_bronze_snapshots_and_offsets(histories):
    tree = upstream_tree(histories, DAILY, 301)
    assert (tree.table, tree.snapshot_id) == (DAILY, 301)
    [facts] = tree.children
    assert (facts.table, facts.snapshot_id) == (FACTS, 101)
    [bronze] = facts.children
    assert (bronze.snapshot_id, bronze.ranges) == (1, (OffsetRange("t", 0, 0, 4), OffsetRange("t", 1, 0, 2)))
    assert [c.snapshot_id for c in bronze.children] == [1]


def test_the_current_state_through_a_compaction_reaches_every_bronze_commit_up_to_its_watermark(histories):
    tree = upstream_tree(histories, DAILY)  # 302: facts 103, a compaction that keeps 102's data
    assert tree.snapshot_id == 302
    by_table = {c.table: c for c in tree.children}
    assert set(by_table) == {FACTS, USERS}
    assert by_table[FACTS].snapshot_id == 103 and by_table[USERS].snapshot_id == 201
    bronze = by_table[FACTS].children[0]
    assert bronze.snapshot_id == 2
    assert [c.snapshot_id for c in bronze.children] == [1, 2]
    assert bronze.ranges == (OffsetRange("t", 0, 0, 8), OffsetRange("t", 1, 0, 2))


def test_an_unknown_snapshot_or_table_is_a_lineage_error(histories):
    with pytest.raises(LineageError, match="999 is not a snapshot"):
        upstream_tree(histories, DAILY, 999)
    with pytest.raises(LineageError, match="gold.nope"):
        upstream_tree(histories, "gold.nope")


def test_an_expired_upstream_snapshot_ends_the_walk_with_a_note(histories):
    histories[FACTS] = histories[FACTS][1:]  # facts 101 expired
    [facts] = upstream_tree(histories, DAILY, 301).children
    assert facts.snapshot_id == 101 and "expired" in facts.note and facts.children == ()


def test_where_gives_the_exact_offsets_of_the_matching_facts_per_bronze_snapshot(histories):
    rows = [(1, "t", 0, 1), (1, "t", 0, 2), (1, "t", 0, 4), (2, "t", 0, 5), (1, "t", 1, 0)]
    tree = where_tree(histories, DAILY, 302, FACTS, rows, "event_date = 'x'")
    [facts] = tree.children
    assert facts.snapshot_id == 103
    assert [(c.snapshot_id, c.ranges) for c in facts.children] == [
        (1, (OffsetRange("t", 0, 1, 2), OffsetRange("t", 0, 4, 4), OffsetRange("t", 1, 0, 0))),
        (2, (OffsetRange("t", 0, 5, 5),)),
    ]
    # 4 and 5 touch across snapshots: one range overall
    assert facts.ranges == (OffsetRange("t", 0, 1, 2), OffsetRange("t", 0, 4, 5), OffsetRange("t", 1, 0, 0))


def test_downstream_from_kafka_offsets_gives_the_first_snapshot_each_table_reached(histories):
    tree = kafka_downstream(histories, BRONZE, parse_range("t:0:6-6"))
    [bronze] = tree.children
    assert bronze.snapshot_id == 2 and bronze.ranges == (OffsetRange("t", 0, 5, 8),)
    reached = {c.table: c for c in bronze.children}
    assert reached[FACTS].snapshot_id == 102 and reached[USERS].snapshot_id == 201
    assert [(c.table, c.snapshot_id) for c in reached[FACTS].children] == [(DAILY, 302)]


def test_downstream_spanning_two_bronze_commits_and_not_yet_in_gold(histories):
    tree = kafka_downstream(histories, BRONZE, parse_range("t:0:3-21"))
    assert [c.snapshot_id for c in tree.children] == [1, 2, 4]
    last = {c.table: c for c in tree.children[2].children}
    assert last[FACTS].snapshot_id == 104
    assert [(c.table, c.snapshot_id, c.note) for c in last[FACTS].children] == [(DAILY, None, "not promoted yet")]
    assert last[USERS].snapshot_id is None


def test_downstream_from_a_bronze_snapshot(histories):
    tree = downstream_tree(histories, BRONZE, 1)
    facts = {c.table: c for c in tree.children}[FACTS]
    assert facts.snapshot_id == 101 and [c.snapshot_id for c in facts.children] == [301]


def test_offsets_nobody_ingested_are_a_lineage_error(histories):
    with pytest.raises(LineageError, match="no bronze snapshot"):
        kafka_downstream(histories, BRONZE, parse_range("t:0:10-19"))  # skipped by the reset


@pytest.mark.parametrize("text, expected", [
    ("t:0:5-9", OffsetRange("t", 0, 5, 9)), ("a:b:2:7", OffsetRange("a:b", 2, 7, 7)),
])
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["t", "t:0", "t:x:1-2", "t:0:5-2", "t:0:-1", ":0:1"])
def test_a_malformed_range_is_a_lineage_error(text):
    with pytest.raises(LineageError):
        parse_range(text)


def test_compress_makes_runs_of_consecutive_offsets():
    assert compress([("t", 0, 4), ("t", 0, 1), ("t", 0, 2), ("t", 1, 3), ("t", 0, 2)]) == (
        OffsetRange("t", 0, 1, 2), OffsetRange("t", 0, 4, 4), OffsetRange("t", 1, 3, 3))


def test_mermaid_and_dot_have_one_node_per_state_and_edges_in_the_direction_data_flowed(histories):
    tree = upstream_tree(histories, DAILY, 301)  # daily <- facts <- bronze(state) <- bronze 1 commit
    mermaid = to_mermaid(tree).splitlines()
    assert mermaid[0] == "flowchart LR"
    assert [line.strip() for line in mermaid if "-->" in line] == ["n1 --> n0", "n2 --> n1", "n3 --> n2"]
    assert any("gold.daily @ 301" in line for line in mermaid)
    assert any("t[0] offsets 0..4" in line for line in mermaid)
    dot = to_dot(tree)
    assert dot.startswith("digraph lineage {") and dot.endswith("}")
    assert dot.count(" -> ") == 3 and dot.count("[label=") == 4
