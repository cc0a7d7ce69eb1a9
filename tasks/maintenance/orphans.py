"""Orphan removal: files under a table's location that nothing references, e.g. left by a crashed writer.

:func:`plan_orphans` is pure: a listed file is an orphan when no snapshot of the table reaches it,
it is not one of the table's metadata files (current, metadata log, statistics) and it was last
modified before ``now - older_than``. The age window keeps the files of a writer that is still
running (written, not yet committed) out of reach. :func:`remove_orphans` lists first and reads
the table's references afterwards, so a file committed while listing is seen as referenced.
"""

from __future__ import annotations

import time
from typing import Iterable

from pyiceberg.table import Table

from tasks.maintenance.inventory import referenced_files
from tasks.maintenance.storage import StoredFile, delete_files, list_files, normalize
from tasks.settings import Settings

KEEP_NAMES = frozenset({"version-hint.text"})  # Hadoop-style catalogs' pointer, never referenced


def plan_orphans(listed: Iterable[StoredFile], referenced: Iterable[str], *, now_ms: int, older_than_ms: int) -> list[StoredFile]:
    """The listed files that are unreferenced and older than the window, sorted by uri."""
    known = {normalize(u) for u in referenced}
    cutoff = now_ms - older_than_ms
    return sorted(
        (f for f in listed
         if normalize(f.uri) not in known and f.mtime_ms < cutoff and f.uri.rsplit("/", 1)[-1] not in KEEP_NAMES),
        key=lambda f: f.uri,
    )


def remove_orphans(table: Table, settings: Settings, *, dry_run: bool = False, now_ms: int | None = None) -> dict:
    """Delete the table's orphan files (list them only, when ``dry_run``); a report."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    listed = list_files(table.location(), settings)
    referenced = referenced_files(table.refresh())  # after listing: see the module docstring
    orphans = plan_orphans(listed, referenced, now_ms=now_ms,
                           older_than_ms=int(settings.maintenance_orphan_age_hours * 3_600_000))
    deleted = [] if dry_run else delete_files([f.uri for f in orphans], settings)
    return {
        "dry_run": dry_run,
        "listed": len(listed),
        "referenced": len(referenced),
        "files": [f.uri for f in orphans],
        "bytes": sum(f.size for f in orphans),
        "deleted": len(deleted),
    }
