"""Iceberg commits and their bookkeeping: Kafka offsets and run ids live in the snapshot summary.

The table is the source of truth for progress. A bronze commit records the next offset of every
partition; the next run starts from there. A commit whose starting offsets are no longer the
table's latest is refused, so two concurrent runs can never both land the same records.
"""

from __future__ import annotations

import json
from typing import Callable, Mapping

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

OFFSETS_KEY = "lakehouse.kafka.offsets"
RUN_ID_KEY = "lakehouse.run-id"
REPORT_KEY = "lakehouse.report"

Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset


class OffsetsMovedError(RuntimeError):
    """Another run committed first: this batch's starting offsets are stale. Nothing was committed."""


def latest_offsets(table: Table) -> Offsets:
    """The offsets recorded by the newest snapshot that carries them (maintenance snapshots don't)."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        raw = summary.additional_properties.get(OFFSETS_KEY) if summary is not None else None
        if raw is not None:
            return decode_offsets(raw)
        if snapshot.parent_snapshot_id is None:
            break
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)
    return {}


def encode_offsets(offsets: Mapping[str, Mapping[int, int]]) -> str:
    return json.dumps({t: {str(p): o for p, o in sorted(ps.items())} for t, ps in sorted(offsets.items())})


def decode_offsets(raw: str) -> Offsets:
    return {t: {int(p): int(o) for p, o in ps.items()} for t, ps in json.loads(raw).items()}


def append_with_offsets(
    table: Table,
    rows: pa.Table,
    expected: Offsets,
    next_offsets: Offsets,
    run_id: str,
    report: Mapping[str, object],
    on_stage: Callable[[str], None] = lambda stage: None,
) -> int:
    """Append ``rows`` in one snapshot that records ``next_offsets``; returns its snapshot id.

    Refuses (OffsetsMovedError) when the table's latest offsets are not ``expected``, both before
    writing and, through the catalog's snapshot requirement, at commit time. The table must have
    ``commit.retry.num-retries=0``: an automatic retry would re-apply the append on top of the
    other run's commit and duplicate records.
    """
    table = table.refresh()
    if latest_offsets(table) != expected:
        raise OffsetsMovedError(f"{table.name()}: offsets moved since the batch was planned; nothing committed")
    if table.metadata.properties.get("commit.retry.num-retries") != "0":
        raise RuntimeError(f"{table.name()} must have commit.retry.num-retries=0 for exactly-once appends")
    summary = {
        OFFSETS_KEY: encode_offsets(next_offsets),
        RUN_ID_KEY: run_id,
        REPORT_KEY: json.dumps(report, sort_keys=True, default=str),
    }
    transaction = table.transaction()
    transaction.append(rows, snapshot_properties=summary)
    on_stage("files-written")
    try:
        committed = transaction.commit_transaction()
    except CommitFailedException as exc:
        raise OffsetsMovedError(f"{table.name()}: a concurrent commit won ({exc}); nothing committed") from exc
    on_stage("committed")
    snapshot = committed.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id
