"""Table maintenance on a daily schedule.

For now it expires snapshots older than each layer's retention, keeping the last few, and never a
tagged one. pyiceberg 0.12's expiry removes them from the metadata but deletes no files:
reclaiming storage (and compaction, orphan removal) is the Operations issue's work.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.catalog import open_catalog
from tasks.orchestration import publish_counts, table_lock
from tasks.settings import Settings, load_settings
from tasks.tables import ALL_TABLES, TableSpec, ensure_table

RETENTION_DAYS = {"bronze": 30, "silver": 7, "gold": 3}
KEEP_LAST = 5


@task(cache_policy=NO_CACHE)
def expire_table(settings: Settings, spec: TableSpec, now: datetime) -> int:
    table = ensure_table(open_catalog(settings), settings, spec)
    cutoff = now - timedelta(days=RETENTION_DAYS[spec.layer])
    newest_first = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    protected |= {s.snapshot_id for s in newest_first[:KEEP_LAST]}
    old = [s.snapshot_id for s in newest_first
           if s.snapshot_id not in protected and s.timestamp_ms < cutoff.timestamp() * 1000]
    if old:
        with table_lock(spec.identifier):
            table.maintenance.expire_snapshots().by_ids(old).commit()
    return len(old)


@flow(name="maintain-tables", log_prints=False)
def maintenance_flow(settings: Optional[Settings] = None) -> dict:
    settings = settings or load_settings()
    now = datetime.now(timezone.utc)
    expired = {spec.identifier: expire_table(settings, spec, now) for spec in ALL_TABLES}
    get_run_logger().info("expired snapshots: %s", expired)
    publish_counts("maintain-tables", expired, "snapshots expired per table (metadata only)")
    return expired
