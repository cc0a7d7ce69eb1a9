"""Offset checks before a batch, and the audited reset's decisions."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tasks.offsets import OffsetsOutOfRangeError, decode_reset, encode_reset, offset_problems, plan_reset

AT = datetime(2026, 11, 30, tzinfo=timezone.utc)


def test_offsets_inside_the_watermarks_are_fine_and_new_partitions_start_anywhere():
    assert offset_problems("t", {0: 5, 1: 0, 2: 10}, {0: (0, 10), 1: (0, 0), 2: (3, 10), 3: (50, 60)}) == []


def test_offset_beyond_the_high_watermark_is_a_recreated_topic():
    [problem] = offset_problems("t", {0: 500, 1: 3}, {0: (0, 12), 1: (0, 10)})
    assert (problem.partition, problem.kind, problem.stored, problem.high) == (0, "beyond", 500, 12)
    message = str(OffsetsOutOfRangeError([problem]))
    assert "t[0]" in message and "500" in message and "12" in message
    assert "lakehouse ingest reset --partition 0" in message


def test_offset_below_the_low_watermark_names_the_expired_records():
    [problem] = offset_problems("t", {1: 7}, {1: (20, 30)})
    assert problem.kind == "expired"
    assert "7..19 (13)" in problem.describe()


def test_a_partition_the_topic_no_longer_has_is_a_problem():
    [problem] = offset_problems("t", {0: 1, 5: 9}, {0: (0, 3)})
    assert problem.partition == 5


@pytest.mark.parametrize("to,expected,skipped", [("earliest", 20, 0), ("latest", 30, 10), ("25", 25, 5)])
def test_reset_of_a_recreated_partition(to, expected, skipped):
    [decision] = plan_reset("t", {0: 500}, {0: (20, 30)}, to, [0], "topic recreated", by="ops", at=AT)
    assert (decision.from_offset, decision.to_offset, decision.skipped) == (500, expected, skipped)
    assert decision.reason == "topic recreated" and decision.by == "ops"


def test_reset_past_expired_records_counts_them_as_skipped():
    [decision] = plan_reset("t", {0: 7}, {0: (20, 30)}, "earliest", None, "retention", by="ops", at=AT)
    assert (decision.from_offset, decision.to_offset, decision.skipped) == (7, 20, 13)


def test_reset_back_skips_nothing_and_every_partition_by_default():
    decisions = plan_reset("t", {0: 9, 1: 4}, {0: (0, 10), 1: (0, 4)}, "earliest", None, "replay", by="ops", at=AT)
    assert [(d.partition, d.to_offset, d.skipped) for d in decisions] == [(0, 0, 0), (1, 0, 0)]
    assert decode_reset(encode_reset(decisions))[0]["to_offset"] == 0


@pytest.mark.parametrize("to,partitions,reason,needle", [
    ("latest", [0], " ", "--reason"),
    ("latest", [4], "x", "no partition [4]"),
    ("soon", [0], "x", "--to must be"),
    ("99", [0], "x", "outside the partition's range [0, 10]"),
])
def test_bad_reset_requests_name_what_is_wrong(to, partitions, reason, needle):
    with pytest.raises(ValueError, match=None) as error:
        plan_reset("t", {0: 3}, {0: (0, 10)}, to, partitions, reason)
    assert needle in str(error.value)
