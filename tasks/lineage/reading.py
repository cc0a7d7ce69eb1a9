"""The catalog I/O behind ``lakehouse lineage``: each table's snapshot history, and for
``--where`` the bronze coordinates of the silver facts that match. The walks are in walk.py."""

from __future__ import annotations

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table

from tasks.lineage.walk import Histories, LineageError, SnapshotRecord
from tasks.tables import ALL_TABLES
from tasks.verify.reading import has_data, lineage, summary

FACT_COORDINATES = ("bronze_snapshot_id", "source_topic", "source_partition", "source_offset")


def snapshot_records(table: Table) -> list[SnapshotRecord]:
    """The current lineage of ``table``, oldest first."""
    if not has_data(table):
        return []
    return [SnapshotRecord(s.snapshot_id, s.parent_snapshot_id, s.sequence_number or 0, s.timestamp_ms, summary(s))
            for s in lineage(table)]


def read_histories(catalog: Catalog, names: tuple[str, ...] | None = None) -> Histories:
    """Every lakehouse table that exists (or only ``names``), by identifier."""
    found = {}
    for name in names or tuple(spec.identifier for spec in ALL_TABLES):
        try:
            table = catalog.load_table(name)
        except (NoSuchTableError, NoSuchNamespaceError):
            continue
        found[name] = snapshot_records(table)
    return found


def matching_fact_coordinates(catalog: Catalog, facts: str, snapshot_id: int, where: str) -> list[tuple]:
    """(bronze_snapshot_id, topic, partition, offset) of the rows of ``facts`` at ``snapshot_id``
    matching ``where`` (an Iceberg filter such as ``event_date = '2026-11-30'``)."""
    from pyiceberg.expressions.parser import parse
    from pyparsing import ParseBaseException

    table = catalog.load_table(facts)
    try:
        expression = parse(where)
    except ParseBaseException as exc:
        raise LineageError(f"--where {where!r} is not an Iceberg filter ({exc})") from None
    try:
        scan = table.scan(row_filter=expression, snapshot_id=snapshot_id, selected_fields=FACT_COORDINATES)
        rows = scan.to_arrow()
    except (ValueError, TypeError) as exc:
        raise LineageError(f"--where {where!r} does not apply to {facts}: {exc}") from None
    columns = [rows.column(c).to_pylist() for c in FACT_COORDINATES]
    return [r for r in zip(*columns) if r[1] is not None and r[2] is not None and r[3] is not None]
