"""Table maintenance on a daily schedule: per table, compaction, snapshot expiry, orphan removal.

The work is in tasks/maintenance; this flow wires it per table, holds each table's lock around
its commits, publishes the counts as an artifact and returns the full report. ``dry_run`` plans
everything and lists what would be rewritten or deleted, and changes nothing.
"""

from __future__ import annotations

from functools import partial

from typing import Optional

from prefect import flow, get_run_logger, task
from pyiceberg.exceptions import NoSuchTableError

from tasks.catalog import open_catalog
from tasks.maintenance import downstream_watermarks, maintain_table
from tasks.orchestration import TRANSIENT_RETRY, crash_if, publish_counts, table_lock
from tasks.lineage.run import emits_lineage
from tasks.settings import Settings, load_settings
from tasks.tables import MAINTAINED_TABLES, TableSpec


# Test affordance (SIGKILL this process, see tasks.orchestration.crash_if), as POINT or
# POINT@TABLE (only while maintaining that table; else the first table that reaches the point):
# compaction's new files written and validated, not committed; just before its catalog commit; one
# partition's replace committed (the files it replaced stay until expiry); expiry committed in the
# metadata, no file deleted; about half of the files expiry deletes deleted.
CRASH_POINTS = ("compaction-files-written", "compaction-commit-staged", "compaction-committed",
                "expiry-committed", "expiry-half-deleted")


def _crash_hook(crash_at: str | None, identifier: str):
    point, _, only = (crash_at or "").partition("@")
    if not point or (only and only != identifier):
        return lambda stage, detail: None
    return lambda stage, detail: crash_if(stage, point)


@task(**TRANSIENT_RETRY)  # a rerun re-plans: compaction and expiry are idempotent
def maintain(settings: Settings, spec: TableSpec, dry_run: bool, watermarks: list[int],
             crash_at: str | None = None) -> dict:
    table = open_catalog(settings, "maintenance").load_table(spec.identifier)
    return maintain_table(table, settings, spec.layer, dry_run=dry_run, lock=partial(table_lock, settings),
                          watermarks=watermarks, on_stage=_crash_hook(crash_at, spec.identifier))


def totals(report: dict[str, dict]) -> dict[str, int]:
    """The counts of a run, summed over its tables."""
    out = dict.fromkeys(("tables", "partitions_compacted", "files_compacted", "files_written",
                         "snapshots_expired", "files_deleted_by_expiry", "orphans_deleted", "orphan_bytes"), 0)
    for steps in report.values():
        out["tables"] += 1
        compaction, expiry, orphans = steps["compaction"], steps["expiry"], steps["orphans"]
        if compaction["dry_run"]:
            out["partitions_compacted"] += len(compaction["plan"])
            out["files_compacted"] += sum(p["files"] for p in compaction["plan"])
            out["files_written"] += sum(p["new_files"] for p in compaction["plan"])
        else:
            done = [p for p in compaction.get("partitions", []) if p["status"] == "committed"]
            out["partitions_compacted"] += len(done)
            out["files_compacted"] += sum(p["files_before"] for p in done)
            out["files_written"] += sum(p["files_after"] for p in done)
        out["snapshots_expired"] += len(expiry.get("snapshots_expired", []))
        out["files_deleted_by_expiry"] += len(expiry.get("files", [])) if expiry["dry_run"] else expiry.get("deleted", 0)
        out["orphans_deleted"] += len(orphans["files"]) if orphans["dry_run"] else orphans["deleted"]
        out["orphan_bytes"] += orphans["bytes"]
    return out


@flow(name="maintain-tables", log_prints=False)
@emits_lineage("maintain-tables", "maintenance")
def maintenance_flow(dry_run: bool = False, settings: Optional[Settings] = None,
                     crash_at: Optional[str] = None) -> dict:
    """Maintain every table that exists; returns {"dry_run", "totals", "tables": {identifier: report}}.

    ``crash_at`` (tests only) SIGKILLs the process at one of ``CRASH_POINTS`` (``POINT@TABLE``: only
    while maintaining that table)."""
    if crash_at is not None and (crash_at.partition("@")[0] not in CRASH_POINTS or crash_at.partition("@")[2]
                                 not in ("", *(spec.identifier for spec in MAINTAINED_TABLES))):
        raise ValueError(f"crash_at must be one of {CRASH_POINTS}, optionally @<table>, got {crash_at!r}")
    settings = settings or load_settings()
    logger = get_run_logger()
    catalog = open_catalog(settings, "maintenance")
    tables = {}
    for spec in MAINTAINED_TABLES:
        try:
            tables[spec.identifier] = catalog.load_table(spec.identifier)
        except NoSuchTableError:
            logger.info("%s does not exist yet; nothing to maintain", spec.identifier)
    # Snapshots a downstream table has not promoted yet must survive expiry.
    watermarks = downstream_watermarks(tables.values())
    report = {
        spec.identifier: maintain(settings, spec, dry_run, sorted(watermarks.get(spec.identifier, ())), crash_at)
        for spec in MAINTAINED_TABLES if spec.identifier in tables
    }
    counts = totals(report)
    logger.info("maintenance%s: %s", " (dry run)" if dry_run else "", counts)
    publish_counts("maintain-tables", {"dry_run": str(dry_run).lower(), **counts},
                   "what maintenance would change (dry run)" if dry_run else "what maintenance changed")
    return {"dry_run": dry_run, "totals": counts, "tables": report}
