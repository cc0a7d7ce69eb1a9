"""What a table's metadata references: live data files, and every file each snapshot reaches.

Read-only I/O against pyiceberg metadata; the planners in compaction, expiry and orphans work on
what these functions return. A snapshot *reaches* its manifest list, its manifests and the data and
delete files that are live in it (ADDED or EXISTING entries: exactly what time travel to it reads).
The metadata files a table references are the current one, those of its metadata log and its
statistics files. Every path is normalised (storage.normalize).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

from tasks.maintenance.storage import normalize


@dataclass(frozen=True)
class LiveFile:
    """A data file live in a snapshot, as the compaction planner sees it."""

    path: str
    spec_id: int
    partition: tuple
    size_bytes: int
    record_count: int
    added_ms: int  # commit time of the snapshot that added it (0 if that snapshot was expired)


@dataclass(frozen=True)
class TableFiles:
    live: list[LiveFile]
    data_files: dict[str, DataFile]  # path -> pyiceberg DataFile, for the commit
    has_delete_files: bool


def live_files(table: Table, snapshot: Snapshot | None = None) -> TableFiles:
    """The data files live in ``snapshot`` (default: the current one)."""
    metadata = table.metadata
    snapshot = snapshot or table.current_snapshot()
    if snapshot is None:
        return TableFiles([], {}, False)
    live, files, has_deletes = [], {}, False
    for manifest in snapshot.manifests(table.io):
        if manifest.content == ManifestContent.DELETES:
            has_deletes = has_deletes or bool(manifest.has_added_files() or manifest.has_existing_files())
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            data_file = entry.data_file
            if data_file.content != DataFileContent.DATA:
                has_deletes = True
                continue
            added = metadata.snapshot_by_id(entry.snapshot_id) if entry.snapshot_id is not None else None
            live.append(LiveFile(
                path=data_file.file_path,
                spec_id=data_file.spec_id,
                partition=tuple(data_file.partition) if data_file.partition is not None else (),
                size_bytes=data_file.file_size_in_bytes,
                record_count=data_file.record_count,
                added_ms=added.timestamp_ms if added is not None else 0,
            ))
            files[data_file.file_path] = data_file
    return TableFiles(live, files, has_deletes)


class ManifestCache:
    """Manifest path -> the files live in it; a manifest is shared by many snapshots, read once."""

    def __init__(self, io: FileIO):
        self.io = io
        self._files: dict[str, frozenset[str]] = {}

    def files(self, manifest) -> frozenset[str]:
        path = manifest.manifest_path
        if path not in self._files:
            entries = manifest.fetch_manifest_entry(self.io, discard_deleted=True)
            self._files[path] = frozenset(normalize(e.data_file.file_path) for e in entries)
        return self._files[path]


def snapshot_reach(snapshot: Snapshot, cache: ManifestCache) -> set[str]:
    """Manifest list, manifests and live data/delete files of one snapshot. Raises if unreadable."""
    reached = {normalize(snapshot.manifest_list)}
    for manifest in snapshot.manifests(cache.io):
        reached.add(normalize(manifest.manifest_path))
        reached |= cache.files(manifest)
    return reached


def reachable_files(metadata: TableMetadata, io: FileIO, snapshot_ids: Iterable[int] | None = None,
                    cache: ManifestCache | None = None, missing_ok: bool = False) -> set[str]:
    """Union of :func:`snapshot_reach` over ``snapshot_ids`` (default: every snapshot in ``metadata``).

    ``missing_ok`` skips unreadable snapshots (for the files of expired snapshots, which may be
    partly gone already); without it an unreadable manifest raises, so nothing is ever deleted on
    an incomplete picture of what is still referenced.
    """
    cache = cache or ManifestCache(io)
    ids = [s.snapshot_id for s in metadata.snapshots] if snapshot_ids is None else list(snapshot_ids)
    reached: set[str] = set()
    for snapshot_id in ids:
        snapshot = metadata.snapshot_by_id(snapshot_id)
        if snapshot is None:
            continue
        try:
            reached |= snapshot_reach(snapshot, cache)
        except (FileNotFoundError, OSError):
            if not missing_ok:
                raise
    return reached


def metadata_files(metadata: TableMetadata, metadata_location: str | None) -> set[str]:
    """The metadata files the table references: current, its metadata log, statistics files."""
    files = {normalize(entry.metadata_file) for entry in metadata.metadata_log}
    if metadata_location:
        files.add(normalize(metadata_location))
    for stats in list(getattr(metadata, "statistics", []) or []) + list(getattr(metadata, "partition_statistics", []) or []):
        files.add(normalize(stats.statistics_path))
    return files


def referenced_files(table: Table, cache: ManifestCache | None = None) -> set[str]:
    """Every file the table (freshly loaded) references through any snapshot or its metadata."""
    return reachable_files(table.metadata, table.io, cache=cache) | metadata_files(table.metadata, table.metadata_location)
