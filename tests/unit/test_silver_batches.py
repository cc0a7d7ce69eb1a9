"""Bounded silver batches: where the first batch of a bronze backlog ends, on snapshot boundaries."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo

from tasks.scans import AppendSize, bounded_range, first_batch_end, pending_range


def _sizes(*records: int, bytes_each: int = 100) -> list[AppendSize]:
    return [AppendSize(index + 1, count, bytes_each * count) for index, count in enumerate(records)]


def test_a_batch_takes_whole_snapshots_up_to_the_record_bound():
    appends = _sizes(200, 200, 100, 300)
    assert first_batch_end(appends, max_records=500, max_bytes=10**9) == 3  # 200+200+100 = 500
    assert first_batch_end(appends, max_records=499, max_bytes=10**9) == 2
    assert first_batch_end(appends, max_records=10**6, max_bytes=10**9) == 4  # everything fits


def test_the_byte_bound_ends_a_batch_too():
    appends = _sizes(200, 200, 100, bytes_each=10)
    assert first_batch_end(appends, max_records=10**6, max_bytes=4000) == 2
    assert first_batch_end(appends, max_records=10**6, max_bytes=3999) == 1


def test_a_snapshot_larger_than_the_bounds_goes_alone_never_split():
    assert first_batch_end(_sizes(5000, 10), max_records=500, max_bytes=10**9) == 1
    assert first_batch_end(_sizes(10, 5000), max_records=500, max_bytes=10**9) == 1


def test_batching_a_backlog_visits_every_snapshot_once_in_order():
    appends = _sizes(300, 300, 50, 50, 50, 700, 1, 499)
    ends = []
    rest = appends
    while rest:
        end = first_batch_end(rest, max_records=500, max_bytes=10**9)
        ends.append(end)
        rest = [a for a in rest if a.snapshot_id > end]
    assert ends == [1, 5, 6, 8]  # [300] [300 50 50 50] [700] [1 499]


@pytest.mark.parametrize("appends, records, size, message", [
    ([], 10, 10, "no append snapshots"),
    (_sizes(1), 0, 10, "must be positive"),
    (_sizes(1), 10, 0, "must be positive"),
])
def test_bad_input_is_refused(appends, records, size, message):
    with pytest.raises(ValueError, match=message):
        first_batch_end(appends, records, size)


def _table(tmp_path):
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "w").as_uri())
    catalog.create_namespace("n")
    return catalog.create_table("n.rows", schema=pa.schema([("x", pa.int64())]))


def test_bounded_range_reads_the_snapshot_summaries_and_skips_maintenance(tmp_path):
    table = _table(tmp_path)
    ids = []
    for start in range(0, 40, 10):
        table.append(pa.table({"x": list(range(start, start + 10))}))
        ids.append(table.current_snapshot().snapshot_id)
        if start == 10:
            table.delete(EqualTo("x", 0))  # a snapshot that adds nothing, as maintenance does
    head = table.current_snapshot().snapshot_id
    after, upto = pending_range(table, [None])
    assert (after, upto) == (None, head)
    assert bounded_range(table, after, upto, max_records=25, max_bytes=10**9) == (None, ids[1])
    assert bounded_range(table, ids[1], upto, max_records=25, max_bytes=10**9) == (ids[1], ids[3])
    assert bounded_range(table, ids[1], upto, max_records=10, max_bytes=10**9) == (ids[1], ids[2])
    # everything fits: the range is left as it was, as an unbounded promotion would take it
    assert bounded_range(table, None, upto, max_records=10**6, max_bytes=10**9) == (None, head)


@pytest.mark.parametrize("key, value", [
    ("LAKEHOUSE_SILVER_MAX_BATCH_RECORDS", "0"),
    ("LAKEHOUSE_SILVER_MAX_BATCH_RECORDS", "many"),
    ("LAKEHOUSE_SILVER_MAX_BATCH_BYTES", "1000"),  # below 1 MiB
])
def test_bad_batch_bounds_name_their_key(monkeypatch, tmp_path, key, value):
    import os

    from tasks.settings import SettingsError, load_settings

    for name in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LAKEHOUSE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.key == key


def test_batch_bounds_default_to_a_million_records_and_512_mib(monkeypatch, tmp_path):
    import os

    from tasks.settings import load_settings

    for name in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LAKEHOUSE_STATE_DIR", str(tmp_path / "state"))
    settings = load_settings()
    assert (settings.silver_max_batch_records, settings.silver_max_batch_bytes) == (500_000, 512 * 1024 * 1024)
