"""Snapshot expiry, and deletion of every file only the expired snapshots reached.

:func:`plan_expiry` is pure. A snapshot stays if any of these holds, else it is expired:
- a branch or tag points at it;
- it is among the newest ``keep_last``;
- it is younger than the layer's retention;
- it is on the current ancestry between the current snapshot and the newest snapshot carrying
  each bookkeeping key (``lakehouse.kafka.offsets``, ``lakehouse.upstream.*``), so that
  tasks.commits.latest_property still finds every offset and watermark by walking parents;
- it is a downstream table's watermark on this table, or on the current ancestry after such a
  watermark, so that tasks.scans.plan_increment can still read what was not promoted yet.

:func:`expire_table` commits the expiry (pyiceberg's expire_snapshots: metadata only), then deletes
the manifest lists, manifests, data files and metadata files that the expired snapshots (and the
metadata before the commit) reached and that nothing in the freshly reloaded metadata reaches:
any retained snapshot, the current metadata file, its metadata log, its statistics files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata

from tasks.maintenance.compaction import Lock, no_lock
from tasks.maintenance.inventory import ManifestCache, metadata_files, reachable_files, referenced_files
from tasks.maintenance.storage import delete_files
from tasks.settings import Settings

log = logging.getLogger(__name__)

OFFSETS_PREFIX = "lakehouse.kafka.offsets"
UPSTREAM_PREFIX = "lakehouse.upstream."
BOOKKEEPING_PREFIXES = (OFFSETS_PREFIX, UPSTREAM_PREFIX)


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: int
    parent_id: int | None
    timestamp_ms: int
    keys: frozenset[str] = frozenset()  # the bookkeeping keys its summary carries


@dataclass(frozen=True)
class ExpiryPlan:
    expire: tuple[int, ...]
    retained: dict[int, str]  # snapshot id -> the first reason it stays


def ancestry(snapshots: Mapping[int, SnapshotInfo], current_id: int | None) -> list[SnapshotInfo]:
    """The current snapshot and its parents, newest first, as far as they still exist."""
    out, seen = [], set()
    while current_id is not None and current_id in snapshots and current_id not in seen:
        seen.add(current_id)
        out.append(snapshots[current_id])
        current_id = snapshots[current_id].parent_id
    return out


def plan_expiry(
    snapshots: Iterable[SnapshotInfo],
    *,
    current_id: int | None,
    refs: Mapping[str, int],
    now_ms: int,
    retention_ms: int,
    keep_last: int,
    watermarks: Iterable[int] = (),
) -> ExpiryPlan:
    """Which snapshots to expire; see the module docstring for what is kept and why."""
    by_id = {s.snapshot_id: s for s in snapshots}
    retained: dict[int, str] = {}

    def keep(snapshot_id: int, why: str) -> None:
        if snapshot_id in by_id:
            retained.setdefault(snapshot_id, why)

    for name, snapshot_id in sorted(refs.items()):
        keep(snapshot_id, f"ref {name}")
    newest = sorted(by_id.values(), key=lambda s: (s.timestamp_ms, s.snapshot_id), reverse=True)
    for s in newest[:keep_last]:
        keep(s.snapshot_id, "keep-last")
    cutoff = now_ms - retention_ms
    for s in newest:
        if s.timestamp_ms >= cutoff:
            keep(s.snapshot_id, "retention")
    line = ancestry(by_id, current_id)
    newest_carrier: dict[str, int] = {}
    for depth, s in enumerate(line):
        for key in s.keys:
            newest_carrier.setdefault(key, depth)
    if newest_carrier:
        for s in line[: max(newest_carrier.values()) + 1]:
            keep(s.snapshot_id, "bookkeeping")
    depth_of = {s.snapshot_id: depth for depth, s in enumerate(line)}
    for mark in watermarks:
        if mark in depth_of:
            for s in line[: depth_of[mark] + 1]:
                keep(s.snapshot_id, "downstream watermark")
        else:
            keep(mark, "downstream watermark")
    return ExpiryPlan(tuple(sorted(i for i in by_id if i not in retained)), retained)


def unreachable(candidates: Iterable[str], protected: set[str]) -> list[str]:
    """The candidate files nothing retained reaches, sorted."""
    return sorted(set(candidates) - protected)


# ---- I/O ---------------------------------------------------------------------------------------


def retention_ms(settings: Settings, layer: str) -> int:
    days = {"bronze": settings.maintenance_retention_bronze_days,
            "silver": settings.maintenance_retention_silver_days,
            "gold": settings.maintenance_retention_gold_days,
            "audit": settings.maintenance_retention_audit_days}[layer]
    return int(days * 86_400_000)


def snapshot_infos(metadata: TableMetadata) -> list[SnapshotInfo]:
    out = []
    for s in metadata.snapshots:
        props = s.summary.additional_properties if s.summary is not None else {}
        keys = frozenset(k for k in props if k.startswith(BOOKKEEPING_PREFIXES))
        out.append(SnapshotInfo(s.snapshot_id, s.parent_snapshot_id, s.timestamp_ms, keys))
    return out


def downstream_watermarks(tables: Iterable[Table]) -> dict[str, set[int]]:
    """Upstream table name -> the snapshots of it that downstream tables recorded as their watermark
    (the newest ``lakehouse.upstream.<name>`` on each downstream table's current ancestry)."""
    out: dict[str, set[int]] = {}
    for table in tables:
        infos = {s.snapshot_id: s for s in snapshot_infos(table.metadata)}
        found: set[str] = set()
        for s in ancestry(infos, table.metadata.current_snapshot_id):
            snapshot = table.metadata.snapshot_by_id(s.snapshot_id)
            props = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
            for key in sorted(k for k in s.keys if k.startswith(UPSTREAM_PREFIX) and k not in found):
                found.add(key)
                try:
                    out.setdefault(key[len(UPSTREAM_PREFIX):], set()).add(int(props[key]))
                except ValueError:
                    log.warning("%s: %s=%r is not a snapshot id", table.name(), key, props[key])
    return out


def plan_table(table: Table, settings: Settings, layer: str, now_ms: int, watermarks: Iterable[int] = ()) -> ExpiryPlan:
    metadata = table.metadata
    return plan_expiry(
        snapshot_infos(metadata), current_id=metadata.current_snapshot_id,
        refs={name: ref.snapshot_id for name, ref in metadata.refs.items()},
        now_ms=now_ms, retention_ms=retention_ms(settings, layer),
        keep_last=settings.maintenance_keep_last_snapshots, watermarks=watermarks,
    )


def expire_table(
    table: Table,
    settings: Settings,
    *,
    layer: str,
    dry_run: bool = False,
    now_ms: int | None = None,
    lock: Lock = no_lock,
    watermarks: Iterable[int] = (),
    on_stage: Callable[[str, object], None] = lambda stage, detail: None,
) -> dict:
    """Expire the table's old snapshots and delete what only they reached; a report.

    With ``dry_run`` nothing is committed or deleted; the report lists what would go.
    ``on_stage(stage, detail)`` is a test hook, called at "committed" (the expiry is in the
    metadata, no file deleted yet) and "half-deleted" (about half of the files to delete are gone).
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    identifier = ".".join(table.name())
    watermarks = set(watermarks)
    report: dict = {"dry_run": dry_run, "conflicts": 0}
    committed = False
    for _attempt in range(settings.maintenance_commit_attempts):
        with lock(identifier):
            table = table.refresh()
            base, base_location = table.metadata, table.metadata_location
            plan = plan_table(table, settings, layer, now_ms, watermarks)
            if dry_run or not plan.expire:
                break
            try:
                table.maintenance.expire_snapshots().by_ids(list(plan.expire)).commit()
                committed = True
                break
            except CommitFailedException as exc:
                log.info("%s: concurrent commit during expiry (%s); re-planning", identifier, exc)
                report["conflicts"] += 1
    else:
        report.update(status="failed: concurrent commits", snapshots_expired=[], files=[], deleted=0)
        return report
    if committed:
        on_stage("committed", list(plan.expire))
    report["snapshots_expired"] = list(plan.expire)
    report["snapshots_retained"] = len(plan.retained)
    if not plan.expire:
        report.update(status="nothing to expire", files=[], deleted=0)
        return report
    cache = ManifestCache(table.io)
    candidates = reachable_files(base, table.io, plan.expire, cache, missing_ok=True) | metadata_files(base, base_location)
    if committed:  # what the table references now, concurrent commits included
        protected = referenced_files(table.refresh(), cache)
    else:  # dry run: what the retained snapshots reach
        retained = [s.snapshot_id for s in base.snapshots if s.snapshot_id not in set(plan.expire)]
        protected = reachable_files(base, table.io, retained, cache) | metadata_files(base, base_location)
    doomed = unreachable(candidates, protected)
    report["files"] = doomed
    if dry_run:
        report["deleted"] = 0
    else:
        half = (len(doomed) + 1) // 2
        deleted = delete_files(doomed[:half], settings)
        on_stage("half-deleted", doomed[:half])
        report["deleted"] = len(deleted) + len(delete_files(doomed[half:], settings))
    report["status"] = "dry run" if dry_run else "expired"
    return report
