"""Which upstream snapshots a downstream table still has to promote."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo

from tasks.scans import pending_range


def _table(tmp_path):
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "w").as_uri())
    catalog.create_namespace("n")
    return catalog.create_table("n.rows", schema=pa.schema([("x", pa.int64())]))


def test_only_maintenance_since_the_watermark_is_nothing_to_promote(tmp_path):
    table = _table(tmp_path)
    table.append(pa.table({"x": [1, 2, 3]}))
    promoted = table.current_snapshot().snapshot_id
    table.delete(EqualTo("x", 2))  # a snapshot that adds no rows, as compaction and expiry are
    assert table.current_snapshot().snapshot_id != promoted
    assert pending_range(table, [promoted, promoted]) is None
    table.append(pa.table({"x": [4]}))
    assert pending_range(table, [promoted]) == (promoted, table.current_snapshot().snapshot_id)


def test_new_appends_and_an_interrupted_promotion_are_pending(tmp_path):
    table = _table(tmp_path)
    assert pending_range(table, [None]) is None  # nothing yet
    table.append(pa.table({"x": [1]}))
    first = table.current_snapshot().snapshot_id
    assert pending_range(table, [None, None]) == (None, first)
    table.append(pa.table({"x": [2]}))
    second = table.current_snapshot().snapshot_id
    # one downstream table reached `second`, another only `first`: finish exactly that range
    assert pending_range(table, [second, first]) == (first, second)
