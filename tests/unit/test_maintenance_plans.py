"""The pure planners of tasks/maintenance: which files to compact, which snapshots to expire, which
files are orphans; the row checksum compaction validates with; the maintenance settings."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from tasks.maintenance.checksum import row_checksum
from tasks.maintenance.compaction import pack, plan_compaction
from tasks.maintenance.expiry import SnapshotInfo, plan_expiry, unreachable
from tasks.maintenance.inventory import LiveFile
from tasks.maintenance.orphans import plan_orphans
from tasks.maintenance.storage import StoredFile, normalize
from tasks.settings import SettingsError, load_settings

MB = 1024 * 1024
HOUR = 3_600_000
DAY = 24 * HOUR
NOW = 1_800_000_000_000


def f(path: str, size: int, day: int = 1, added: int = NOW - 3 * DAY, spec: int = 0) -> LiveFile:
    return LiveFile(path=path, spec_id=spec, partition=(day,), size_bytes=size, record_count=10, added_ms=added)


def plan(files, **kw):
    opts = dict(now_ms=NOW, target_bytes=128 * MB, small_bytes=96 * MB, freshness_ms=DAY, min_files=2, spec_id=0)
    return plan_compaction(files, **{**opts, **kw})


# ---- compaction -------------------------------------------------------------------------------


def test_small_files_of_a_partition_are_grouped_and_big_ones_left_alone():
    result = plan([f("a", 10 * MB), f("b", 20 * MB), f("c", 5 * MB), f("big", 120 * MB), f("x", 1 * MB, day=2)])
    assert len(result.rewrites) == 1  # day 2 has a single small file: nothing to gain
    rewrite = result.rewrites[0]
    assert rewrite.partition == (1,)
    assert rewrite.groups == (("b", "a", "c"),)  # largest first
    assert rewrite.source_bytes == 35 * MB and "big" not in rewrite.sources


def test_groups_never_exceed_the_target_and_single_file_groups_are_dropped():
    files = [f(f"p{i}", 50 * MB) for i in range(5)] + [f("q", 90 * MB)]
    result = plan(files)
    groups = result.rewrites[0].groups
    sizes = {x.path: x.size_bytes for x in files}
    assert all(sum(sizes[p] for p in g) <= 128 * MB for g in groups)
    assert all(len(g) > 1 for g in groups)
    assert sorted(p for g in groups for p in g) == ["p0", "p1", "p2", "p3"]  # p4 and q would sit alone


def test_fresh_partitions_are_skipped():
    files = [f("old1", MB), f("old2", MB), f("new1", MB, day=2), f("new2", MB, day=2, added=NOW - HOUR)]
    result = plan(files)
    assert [r.partition for r in result.rewrites] == [(1,)]
    assert result.fresh == ((0, (2,)),)
    assert [r.partition for r in plan(files, freshness_ms=0).rewrites] == [(1,), (2,)]


def test_min_files_other_specs_and_determinism():
    files = [f("a", MB), f("b", MB), f("c", MB, spec=1), f("d", MB, spec=1)]
    assert [r.key for r in plan(files).rewrites] == [(0, (1,))]  # spec 1 is not the current spec
    assert plan(files, min_files=3).rewrites == ()
    assert plan(files) == plan(list(reversed(files)))


def test_pack_first_fit_decreasing():
    assert pack([("a", 6), ("b", 5), ("c", 4), ("d", 3), ("e", 2)], 10) == [["a", "c"], ["b", "d", "e"]]
    assert pack([("huge", 50), ("s", 1)], 10) == [["huge"], ["s"]]


# ---- expiry -----------------------------------------------------------------------------------


def chain(n: int, step_ms: int = DAY, keys: dict[int, set[str]] | None = None) -> list[SnapshotInfo]:
    """Snapshots 1..n, each the parent of the next, one a day, the newest at NOW."""
    keys = keys or {}
    return [SnapshotInfo(i, i - 1 if i > 1 else None, NOW - (n - i) * step_ms, frozenset(keys.get(i, ())))
            for i in range(1, n + 1)]


def expire(snapshots, **kw):
    opts = dict(current_id=max(s.snapshot_id for s in snapshots), refs={"main": max(s.snapshot_id for s in snapshots)},
                now_ms=NOW, retention_ms=3 * DAY, keep_last=2)
    return plan_expiry(snapshots, **{**opts, **kw})


def test_old_snapshots_expire_but_retention_window_stays():
    result = expire(chain(10))  # ages 9..0 days; retention 3 days keeps ages 0..3
    assert result.expire == (1, 2, 3, 4, 5, 6)
    assert result.retained[10] == "ref main" and result.retained[7] == "retention"


def test_keep_last_applies_even_when_everything_is_old():
    snapshots = chain(6, step_ms=DAY)
    result = expire(snapshots, now_ms=NOW + 100 * DAY, keep_last=3)
    assert result.expire == (1, 2, 3)
    assert {result.retained[i] for i in (4, 5)} == {"keep-last"}


def test_tags_and_branches_are_never_expired():
    result = expire(chain(10), refs={"main": 10, "audit": 2, "dev": 4})
    assert 2 not in result.expire and 4 not in result.expire
    assert result.retained[2] == "ref audit" and result.retained[4] == "ref dev"
    assert result.expire == (1, 3, 5, 6)


def test_bookkeeping_chain_to_the_newest_offsets_survives():
    # 3 and 5 carry offsets; 6..10 are maintenance snapshots without them, all old
    snapshots = chain(10, keys={3: {"lakehouse.kafka.offsets"}, 5: {"lakehouse.kafka.offsets"}})
    result = expire(snapshots, now_ms=NOW + 100 * DAY)
    assert result.expire == (1, 2, 3, 4)
    assert {result.retained[i] for i in (5, 6, 7, 8)} == {"bookkeeping"}


def test_downstream_watermarks_keep_everything_not_promoted_yet():
    result = expire(chain(10), now_ms=NOW + 100 * DAY, watermarks=[4])
    assert result.expire == (1, 2, 3)
    assert result.retained[4] == "downstream watermark"


def test_nothing_expires_inside_retention():
    assert expire(chain(5), retention_ms=30 * DAY).expire == ()


def test_unreachable_is_candidates_minus_protected():
    assert unreachable(["a", "b", "c", "b"], {"b"}) == ["a", "c"]


# ---- orphans ----------------------------------------------------------------------------------


def test_orphans_are_old_and_unreferenced():
    old, young = NOW - 10 * DAY, NOW - HOUR
    listed = [
        StoredFile("/w/t/data/referenced.parquet", 10, old),
        StoredFile("/w/t/data/crashed-writer.parquet", 20, old),
        StoredFile("/w/t/data/in-flight.parquet", 30, young),
        StoredFile("/w/t/metadata/00001-x.metadata.json", 40, old),
        StoredFile("/w/t/metadata/version-hint.text", 1, old),
    ]
    referenced = {"file:///w/t/data/referenced.parquet", "file:/w/t/metadata/00001-x.metadata.json"}
    orphans = plan_orphans(listed, referenced, now_ms=NOW, older_than_ms=3 * DAY)
    assert [o.uri for o in orphans] == ["/w/t/data/crashed-writer.parquet"]


def test_orphans_on_s3_spellings():
    listed = [StoredFile("s3://b/t/data/a.parquet", 1, 0), StoredFile("s3://b/t/data/b.parquet", 1, 0)]
    orphans = plan_orphans(listed, {"s3a://b/t/data/a.parquet"}, now_ms=NOW, older_than_ms=DAY)
    assert [o.uri for o in orphans] == ["s3://b/t/data/b.parquet"]


def test_normalize():
    assert normalize("file:///a/b") == normalize("file:/a/b") == normalize("/a/b") == "/a/b"
    assert normalize("s3n://b/k") == normalize("s3://b/k") == "s3://b/k"


# ---- checksum ----------------------------------------------------------------------------------


def test_row_checksum_ignores_order_and_batches_but_sees_every_value():
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()),
                        ("tags", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())])))])
    rows = [{"id": 1, "name": "a", "tags": [{"key": "k", "value": b"v"}]},
            {"id": 2, "name": None, "tags": None}, {"id": 3, "name": "c", "tags": []}]
    table = pa.Table.from_pylist(rows, schema=schema)
    shuffled = pa.concat_tables([pa.Table.from_pylist(rows[2:], schema=schema),
                                 pa.Table.from_pylist(rows[:2][::-1], schema=schema)])
    assert row_checksum(table) == row_checksum(shuffled)
    assert row_checksum(table).rows == 3
    changed = [dict(rows[0], tags=[{"key": "k", "value": b"w"}])] + rows[1:]
    assert row_checksum(pa.Table.from_pylist(changed, schema=schema)) != row_checksum(table)
    swapped = [dict(rows[0], name=None), dict(rows[1], name="a")] + rows[2:]  # same values, other rows
    assert row_checksum(pa.Table.from_pylist(swapped, schema=schema)).digest != row_checksum(table).digest
    duplicated = pa.Table.from_pylist(rows + rows[:1], schema=schema)
    assert row_checksum(duplicated) != row_checksum(table)


# ---- settings ----------------------------------------------------------------------------------


def test_maintenance_settings_defaults_and_validation(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    settings = load_settings(state_dir=str(tmp_path))
    assert settings.maintenance_target_file_bytes == 128 * MB
    assert (settings.maintenance_retention_bronze_days, settings.maintenance_retention_silver_days,
            settings.maintenance_retention_gold_days) == (30, 7, 3)
    assert settings.maintenance_keep_last_snapshots == 5 and settings.maintenance_orphan_age_hours == 72
    monkeypatch.setenv("LAKEHOUSE_MAINTENANCE_SMALL_FILE_BYTES", str(200 * MB))
    with pytest.raises(SettingsError) as err:
        load_settings(state_dir=str(tmp_path))
    assert err.value.key == "LAKEHOUSE_MAINTENANCE_SMALL_FILE_BYTES"
    monkeypatch.setenv("LAKEHOUSE_MAINTENANCE_SMALL_FILE_BYTES", "1000")
    monkeypatch.setenv("LAKEHOUSE_MAINTENANCE_ORPHAN_AGE_HOURS", "0.1")
    with pytest.raises(SettingsError) as err:
        load_settings(state_dir=str(tmp_path))
    assert err.value.key == "LAKEHOUSE_MAINTENANCE_ORPHAN_AGE_HOURS"
