"""The ``<layer>.upstream_snapshots`` checks: every upstream snapshot id a table records still exists
upstream (else downstream lineage points nowhere), and is in the upstream's current lineage."""

from __future__ import annotations

from typing import Callable

from pyiceberg.table.snapshots import ancestors_of

from tasks.commits import latest_property
from tasks.tables import ALL_TABLES
from tasks.verify.reading import Context, has_data, lineage, plural, summary
from tasks.verify.report import EXAMPLES, Check

UPSTREAM_PREFIX = "lakehouse.upstream."


def upstream_snapshots(layer: str) -> Callable[[Context], list[Check]]:
    def run(context: Context) -> list[Check]:
        name = f"{layer}.upstream_snapshots"
        problems, notes, pointers = [], [], {}
        for spec in (s for s in ALL_TABLES if s.layer == layer):
            table = context.table(spec.identifier)
            if not has_data(table):
                continue
            keys = sorted({k for s in lineage(table) for k in summary(s) if k.startswith(UPSTREAM_PREFIX)})
            for key in keys:
                upstream_name, raw = key[len(UPSTREAM_PREFIX):], latest_property(table, key)
                try:
                    snapshot_id = int(raw)
                except (TypeError, ValueError):
                    problems.append(f"{spec.identifier}: {key}={raw!r} is not a snapshot id")
                    continue
                pointers.setdefault(spec.identifier, {})[upstream_name] = snapshot_id
                upstream = context.table(upstream_name)
                if upstream is None:
                    problems.append(f"{spec.identifier}: {key} names {upstream_name}, which does not exist")
                elif upstream.metadata.snapshot_by_id(snapshot_id) is None:
                    problems.append(f"{spec.identifier}: {key}={snapshot_id} is not a snapshot of {upstream_name}")
                elif snapshot_id not in {s.snapshot_id for s in ancestors_of(upstream.current_snapshot(),
                                                                             upstream.metadata)}:
                    notes.append(f"{spec.identifier}: {upstream_name} snapshot {snapshot_id} is not in its current "
                                 "lineage (rolled back, or lineage cut by expiry)")
        counts = {"pointers": pointers}
        if problems:
            return [Check(name, layer, False, "; ".join(problems), counts)]
        if not pointers:
            return [Check(name, layer, True, "empty", counts)]
        total = sum(len(v) for v in pointers.values())
        detail = f"upstream snapshot ids: {total} in {plural(len(pointers), 'table')}, all exist upstream"
        if notes:
            detail += "; " + "; ".join(notes[:EXAMPLES])
        return [Check(name, layer, True, detail, counts, warning=bool(notes))]

    return run
