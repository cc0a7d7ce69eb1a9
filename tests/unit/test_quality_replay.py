"""Replay's pure parts on a few rows: which quarantined rows are re-checked, their bronze-shaped
records, what becomes of each now-valid event, and the --since option."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from flows.commands.replay import parse_since
from tasks.quality import replay
from tasks.quality.runner import Outcome

T = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def quarantine(rows: list[tuple]) -> pa.Table:
    """(reason_codes, value, topic, partition, offset, minutes after T)"""
    return pa.table({
        "reason_codes": pa.array([r[0] for r in rows], pa.list_(pa.string())),
        "reject_detail": pa.array(["x"] * len(rows), pa.string()),
        "value": pa.array([r[1] for r in rows], pa.binary()),
        "source_topic": [r[2] for r in rows], "source_partition": pa.array([r[3] for r in rows], pa.int32()),
        "source_offset": pa.array([r[4] for r in rows], pa.int64()),
        "kafka_timestamp": pa.array([T + timedelta(minutes=r[5]) for r in rows], pa.timestamp("us", "UTC")),
        "bronze_snapshot_id": pa.array([9] * len(rows), pa.int64()),
    })


ROWS = quarantine([
    (["BAD_ENUM"], b"{1}", "t", 0, 1, 0),
    (["DQ_USER_COUNTRY_IN_SET"], None, "t", 0, 2, 10),
    (["DQ_USER_COUNTRY_IN_SET", "DQ_LATENCY_MS_IN_RANGE"], None, "t", 1, 2, 20),
    (["DQ_USER_COUNTRY_IN_SET"], None, "t", 0, 2, 10),  # the same record twice (a crash-retried commit)
])


def test_selected_filters_by_reason_and_time_once_per_record():
    assert replay.selected(ROWS, None, None).column("source_offset").to_pylist() == [1, 2, 2]
    chosen = replay.selected(ROWS, "DQ_USER_COUNTRY_IN_SET", None)
    assert list(zip(chosen.column("source_partition").to_pylist(), chosen.column("source_offset").to_pylist())) == [(0, 2), (1, 2)]
    assert replay.selected(ROWS, "DQ_USER_COUNTRY_IN_SET", T + timedelta(minutes=15)).column("source_partition").to_pylist() == [1]
    assert replay.selected(ROWS, "NOPE", None).num_rows == 0


def test_as_records_takes_the_kept_value_else_bronzes():
    bronze = pa.table({"topic": ["t", "t"], "partition": pa.array([0, 1], pa.int32()), "offset": pa.array([2, 2], pa.int64()),
                       "value": pa.array([b"{p0}", b"{p1}"], pa.binary())})
    records = replay.as_records(replay.selected(ROWS, None, None), bronze)
    assert records.column_names == list(replay.RECORD_COLUMNS)
    assert records.column("value").to_pylist() == [b"{1}", b"{p0}", b"{p1}"]
    assert records.column("offset").to_pylist() == [1, 2, 2]


def test_sort_out_new_recovered_and_duplicate():
    first = pa.table({"event_id": ["a", "b", "c"], "source_topic": ["t"] * 3,
                      "source_partition": pa.array([0, 0, 1], pa.int32()), "source_offset": pa.array([5, 6, 7], pa.int64())})
    stored = {"b": ("t", 0, 6), "c": ("t", 2, 99)}
    assert replay.sort_out(first, stored) == ["new", "recovered", "duplicate"]


def test_still_failing_counts_only_rejecting_severities():
    outcomes = [Outcome("a", "x", "quarantine", False, "", 3, 1, 33.3, (0,)),
                Outcome("b", "x", "warn", False, "", 3, 1, 33.3, (1,)),
                Outcome("c", "x", "fail", False, "", 3, 1, 33.3, (2,)),
                Outcome("d", "x", "quarantine", True, "", 3, 0, 0.0, ())]
    assert replay.still_failing(outcomes) == {0, 2}


def test_records_filter_names_each_topic_partition():
    expr = replay.records_filter([("t", 0, 2), ("t", 1, 2), ("t", 0, 1)])
    text = repr(expr)
    assert "Or" in text and "source_offset" in text
    with pytest.raises(ValueError):
        replay.records_filter([])


def test_since_is_iso_8601_utc_by_default():
    assert parse_since("2026-03-01T12:00:00Z") == T
    assert parse_since("2026-03-01T12:00:00") == T
    assert parse_since(None) is None
    with pytest.raises(ValueError, match="--since: 'yesterday'"):
        parse_since("yesterday")
