"""Kafka records → bronze rows, and the offset bookkeeping in snapshot summaries."""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from tasks.commits import OffsetsMovedError, append_with_offsets, decode_offsets, encode_offsets, latest_offsets
from tasks.transforms.bronze import BRONZE_SCHEMA, RecordColumns, records_to_arrow

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _columns(n: int, **overrides) -> RecordColumns:
    cols = RecordColumns(
        offsets=list(range(10, 10 + n)),
        timestamps_ms=[1_700_000_000_000 + i for i in range(n)],
        keys=[b"u-1", None, b"u-2"][:n],
        values=[b'{"a":1}', b"\xff\x00 not json", b""][:n],
        headers=[None, [("trace", b"abc"), ("empty", None)], None][:n],
    )
    for key, value in overrides.items():
        setattr(cols, key, value)
    return cols


def test_records_become_rows_exactly_as_they_came():
    table = records_to_arrow("events", 2, _columns(3), NOW, "run-1")
    assert table.schema == BRONZE_SCHEMA
    rows = table.to_pylist()
    assert [r["offset"] for r in rows] == [10, 11, 12]
    assert [r["value"] for r in rows] == [b'{"a":1}', b"\xff\x00 not json", b""]
    assert rows[1]["key"] is None and rows[1]["headers"] == [{"key": "trace", "value": b"abc"}, {"key": "empty", "value": None}]
    assert rows[0]["kafka_timestamp"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert {r["partition"] for r in rows} == {2} and {r["ingest_run_id"] for r in rows} == {"run-1"}
    assert {r["ingested_at"] for r in rows} == {NOW}


def test_missing_broker_timestamp_falls_back_to_ingested_at():
    table = records_to_arrow("events", 0, _columns(1, timestamps_ms=[-1]), NOW, "r")
    assert table.column("kafka_timestamp").to_pylist() == [NOW]


def test_empty_batch_has_the_schema():
    table = records_to_arrow("events", 0, RecordColumns(), NOW, "r")
    assert table.num_rows == 0 and table.schema == BRONZE_SCHEMA


def test_ragged_columns_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        records_to_arrow("events", 0, _columns(3, keys=[None]), NOW, "r")


def test_offsets_round_trip_through_the_summary_encoding():
    offsets = {"events": {0: 5, 2: 7, 1: 0}}
    assert decode_offsets(encode_offsets(offsets)) == offsets


@pytest.fixture
def bronze_table(tmp_path, monkeypatch):
    from tasks.catalog import ensure_namespaces, open_catalog
    from tasks.settings import load_settings
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    settings = load_settings(state_dir=str(tmp_path))
    catalog = open_catalog(settings, "ingest")
    ensure_namespaces(catalog, settings)
    return ensure_table(catalog, settings, BRONZE_CONVERSION_EVENTS_RAW)


def test_append_records_offsets_and_refuses_a_stale_start(bronze_table):
    rows = records_to_arrow("events", 0, _columns(3), NOW, "r1")
    stages = []
    append_with_offsets(bronze_table, rows, {}, {"events": {0: 13}}, "r1", {"records": 3}, on_stage=stages.append)
    assert stages == ["files-written", "committed"]
    assert latest_offsets(bronze_table.refresh()) == {"events": {0: 13}}
    # A second run that planned from the empty table must not land its copy.
    with pytest.raises(OffsetsMovedError):
        append_with_offsets(bronze_table, rows, {}, {"events": {0: 13}}, "r2", {})
    assert bronze_table.refresh().scan().to_arrow().num_rows == 3


def test_latest_offsets_skips_snapshots_without_them(bronze_table):
    rows = records_to_arrow("events", 0, _columns(1), NOW, "r1")
    append_with_offsets(bronze_table, rows, {}, {"events": {0: 11}}, "r1", {})
    bronze_table.refresh().append(rows.slice(0, 0))  # e.g. a maintenance commit
    assert latest_offsets(bronze_table.refresh()) == {"events": {0: 11}}
