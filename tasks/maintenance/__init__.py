"""Table maintenance that pyiceberg 0.12 lacks: compaction, file-deleting expiry, orphan removal.

Each module pairs a pure planner (unit-tested on plain values) with the I/O that executes it:
- compaction: plan_compaction / compact_table
- expiry: plan_expiry / expire_table (and downstream_watermarks, which it must respect)
- orphans: plan_orphans / remove_orphans
- inventory: what a table's metadata references; storage: list/delete on file:// and s3://
- checksum: the order-independent row checksum compaction validates with
"""

from __future__ import annotations

from typing import Callable, Iterable

from pyiceberg.table import Table

from tasks.maintenance.compaction import Lock, compact_table, no_lock, plan_compaction
from tasks.maintenance.expiry import downstream_watermarks, expire_table, plan_expiry
from tasks.maintenance.orphans import plan_orphans, remove_orphans
from tasks.settings import Settings

__all__ = [
    "compact_table", "expire_table", "remove_orphans", "maintain_table", "downstream_watermarks",
    "plan_compaction", "plan_expiry", "plan_orphans", "no_lock",
]


def maintain_table(
    table: Table,
    settings: Settings,
    layer: str,
    *,
    dry_run: bool = False,
    now_ms: int | None = None,
    lock: Lock = no_lock,
    watermarks: Iterable[int] = (),
    on_stage: Callable[[str, object], None] = lambda stage, detail: None,
) -> dict:
    """Compaction, then expiry, then orphan removal on one table; one report per step.

    ``on_stage`` (a test hook) hears every stage of compaction and expiry, prefixed by the step:
    "compaction-files-written", "compaction-commit-staged", "compaction-committed",
    "expiry-committed", "expiry-half-deleted"."""
    compaction = compact_table(table, settings, dry_run=dry_run, now_ms=now_ms, lock=lock,
                               on_stage=lambda stage, detail: on_stage(f"compaction-{stage}", detail))
    expiry = expire_table(table, settings, layer=layer, dry_run=dry_run, now_ms=now_ms, lock=lock,
                          watermarks=watermarks,
                          on_stage=lambda stage, detail: on_stage(f"expiry-{stage}", detail))
    orphans = remove_orphans(table, settings, dry_run=dry_run, now_ms=now_ms)
    return {"compaction": compaction, "expiry": expiry, "orphans": orphans}
