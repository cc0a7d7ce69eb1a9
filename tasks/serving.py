"""The analyst's and auditor's entry point: SQL over every table, time travel, history and diffs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import daft
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import is_parent_ancestor_of

from tasks.catalog import io_config, open_catalog
from tasks.offsets import RESET_KEY
from tasks.settings import NAMESPACES, Settings

_NAME = re.compile(r"\b(bronze|silver|gold)\.([A-Za-z_][A-Za-z0-9_]*)\b")
_BINDING = re.compile(r"\b(bronze|silver|gold)__([A-Za-z_][A-Za-z0-9_]*)\b")  # _NAME as Daft sees it
_NOT_FOUND = re.compile(r"Table not found: (\S+)$")  # Daft's message for a name the query binds to nothing


class QueryError(ValueError):
    """The query or its time-travel arguments are wrong; the message is for the user."""


def no_table(name: str, tables) -> QueryError:
    """The one error for a table name that names no table: it lists the tables there are."""
    return QueryError(f"no table {name!r} (tables: {', '.join(sorted(tables)) or 'none yet'})")


@dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int
    files: int
    size_bytes: int
    snapshot_id: int | None
    last_commit: datetime | None


def _binding(layer: str, name: str) -> str:
    return f"{layer}__{name}"


def table_names(catalog: Catalog) -> list[str]:
    """``<layer>.<table>`` of every table the catalog lists, without loading them."""
    names = []
    for layer in NAMESPACES:
        try:
            idents = catalog.list_tables(layer)
        except Exception:  # noqa: BLE001 - a missing namespace just has no tables
            continue
        names.extend(".".join(ident) for ident in idents)
    return names


def existing_tables(catalog: Catalog) -> dict[str, Table]:
    out = {}
    for name in table_names(catalog):
        try:
            out[name] = catalog.load_table(name)
        except NoSuchTableError:  # dropped between listing and loading
            continue
    return out


def snapshot_as_of(table: Table, moment: datetime) -> int | None:
    """The table's snapshot current at ``moment``; None when no retained snapshot was current then.

    After snapshot expiry the log holds retained snapshots only. Iceberg's REST server drops every
    entry up to the last expired one, but pyiceberg (the SQL catalog) drops just the expired entries
    (and the parent ids pointing at them), so a moment whose state was expired would find the
    retained entry before it: an older state than the one current at that moment. Sequence numbers
    count every snapshot commit, so a number between two log entries that no retained snapshot
    holds marks such a gap, and a moment in it has no retained state.
    """
    ms = moment.timestamp() * 1000
    metadata = table.metadata
    log = metadata.snapshot_log
    chosen = None
    for i, entry in enumerate(log):
        if entry.timestamp_ms <= ms:
            chosen = i
    if chosen is None:
        return None
    if chosen + 1 < len(log):
        here, following = (metadata.snapshot_by_id(e.snapshot_id) for e in log[chosen:chosen + 2])
        if here is not None and following is not None and here.sequence_number and following.sequence_number:
            held = {s.sequence_number for s in metadata.snapshots}
            if any(n not in held for n in range(here.sequence_number + 1, following.sequence_number)):
                return None  # expired snapshots were committed between the two entries
    return log[chosen].snapshot_id


def _reach_back(table: Table, name: str) -> str:
    """Why a moment has no state, and what time travel still reaches: for the user's error."""
    if not table.metadata.snapshot_log:
        return "it has no snapshots"
    first = table.metadata.snapshot_log[0]
    at = datetime.fromtimestamp(first.timestamp_ms / 1000, timezone.utc).isoformat()
    return (f"that state was expired or predates the table; the oldest it can reach by time is snapshot "
            f"{first.snapshot_id} from {at} (`lakehouse history {name}` lists every retained snapshot)")


def run_sql(
    settings: Settings,
    query: str,
    as_of: datetime | None = None,
    snapshots: dict[str, int] | None = None,
) -> pa.Table:
    """Daft SQL over ``<layer>.<table>`` names; ``as_of`` or per-table ``snapshots`` time-travel."""
    catalog = open_catalog(settings, "serving")
    tables = existing_tables(catalog)
    referenced = {f"{layer}.{name}" for layer, name in _NAME.findall(query)}
    unknown = sorted(referenced - set(tables))
    if unknown:
        raise no_table(unknown[0], tables)
    for name in snapshots or {}:
        if name not in tables:
            raise QueryError(f"--snapshot: {no_table(name, tables)}")
    bindings = {}
    for name in referenced:
        table = tables[name]
        snapshot_id = (snapshots or {}).get(name)
        if snapshot_id is None and as_of is not None:
            snapshot_id = snapshot_as_of(table, as_of)
            if snapshot_id is None:
                raise QueryError(f"{name} has no retained state as of {as_of.isoformat()}: {_reach_back(table, name)}")
        if snapshot_id is not None and table.metadata.snapshot_by_id(snapshot_id) is None:
            raise QueryError(f"{name} has no snapshot {snapshot_id}: expired, or never one of its snapshots "
                             f"(`lakehouse history {name}` lists those retained)")
        layer, short = name.split(".", 1)
        bindings[_binding(layer, short)] = daft.read_iceberg(table, snapshot_id=snapshot_id, io_config=io_config(settings, "serving"))
    rewritten = _NAME.sub(lambda m: _binding(m.group(1), m.group(2)), query)
    try:
        return daft.sql(rewritten, **bindings).to_arrow()
    except Exception as exc:
        if not _about_the_query(exc):
            raise
        missing = _NOT_FOUND.match(str(exc))
        if missing:
            raise no_table(missing.group(1), tables) from None
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise QueryError(_BINDING.sub(r"\1.\2", message.removeprefix("DaftError::"))) from None


def _about_the_query(exc: Exception) -> bool:
    """Daft's errors about the SQL: its SQL exception (made in Rust, it has no Python name to import)
    and its core errors, e.g. a GROUP BY misuse found while running; not the store's transient ones."""
    from daft.exceptions import DaftCoreException, DaftTransientError

    if isinstance(exc, DaftTransientError):
        return False
    return isinstance(exc, DaftCoreException) or type(exc).__name__ == "InvalidSQLException"



def describe_tables(settings: Settings) -> list[TableInfo]:
    out = []
    for name, table in sorted(existing_tables(open_catalog(settings, "serving")).items()):
        snapshot = table.current_snapshot()
        props = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
        out.append(TableInfo(
            name=name,
            rows=int(props.get("total-records", 0)),
            files=int(props.get("total-data-files", 0)),
            size_bytes=int(props.get("total-files-size", 0)),
            snapshot_id=snapshot.snapshot_id if snapshot else None,
            last_commit=datetime.fromtimestamp(snapshot.timestamp_ms / 1000, timezone.utc) if snapshot else None,
        ))
    return out


def load_known_table(settings: Settings, name: str) -> Table:
    """The table named ``<layer>.<table>``; any other name, or one the catalog lacks, is the user's error."""
    catalog = open_catalog(settings, "serving")
    if _NAME.fullmatch(name):  # else no name the catalog could hold: it raises ValueError or NoSuchIdentifierError
        try:
            return catalog.load_table(name)
        except (NoSuchTableError, NoSuchNamespaceError):
            pass
    raise no_table(name, table_names(catalog))


def history(settings: Settings, name: str) -> list[dict]:
    """Snapshots oldest first: id, parent, time, operation and the summary we keep (offsets, upstream, counts)."""
    table = load_known_table(settings, name)
    rows = []
    for snapshot in sorted(table.metadata.snapshots, key=lambda s: s.sequence_number):
        summary = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
        rows.append({
            "snapshot_id": snapshot.snapshot_id,
            "parent_id": snapshot.parent_snapshot_id,
            "committed_at": datetime.fromtimestamp(snapshot.timestamp_ms / 1000, timezone.utc).isoformat(),
            "operation": snapshot.summary.operation.value if snapshot.summary else None,
            "added_records": summary.get("added-records"),
            "total_records": summary.get("total-records"),
            "reset": _describe_reset(summary.get(RESET_KEY)),
            "lakehouse": {k: (json.loads(v) if k.endswith(("offsets", "report", "reset")) and v[:1] in "{[" else v)
                          for k, v in summary.items() if k.startswith("lakehouse.")},
        })
    return rows


def _describe_reset(raw: str | None) -> str | None:
    """An audited offset reset in one line: each partition's move, why and by whom."""
    if raw is None:
        return None
    moves = json.loads(raw)
    parts = [f"{m['topic']}[{m['partition']}] {m['from_offset']}→{m['to_offset']} (skipped {m['skipped']})" for m in moves]
    first = moves[0] if moves else {}
    return f"offset reset: {', '.join(parts)}; reason: {first.get('reason')}; by {first.get('by')} at {first.get('at')}"


def diff(settings: Settings, name: str, from_snapshot: int, to_snapshot: int) -> pa.Table:
    """Rows appended after ``from_snapshot`` up to ``to_snapshot``."""
    table = load_known_table(settings, name)
    for sid in (from_snapshot, to_snapshot):
        if table.metadata.snapshot_by_id(sid) is None:
            raise QueryError(f"{name} has no snapshot {sid}")
    if not is_parent_ancestor_of(to_snapshot, from_snapshot, table.metadata):
        raise QueryError(f"{name}: --from {from_snapshot} is not older than --to {to_snapshot} in the same line of "
                         f"snapshots (`lakehouse history {name}` lists them)")
    scan = table.incremental_append_scan(from_snapshot_id_exclusive=from_snapshot, to_snapshot_id_inclusive=to_snapshot)
    return scan.to_arrow()
