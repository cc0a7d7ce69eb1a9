"""Pure walks over snapshot histories: no catalog here, only what snapshot summaries hold.

Every silver and gold commit records the snapshot of each upstream table it was promoted up to
(``lakehouse.upstream.<table>``); every bronze commit records the next Kafka offset of every
partition and, in its report, where the batch started. Following those pointers gives, for any
table state, the upstream snapshots behind it and the Kafka offset ranges that fed it; following
them backwards gives the first downstream snapshot each record reached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from tasks.commits import OFFSETS_KEY, REPORT_KEY, decode_offsets
from tasks.offsets import RESET_KEY

UPSTREAM_PREFIX = "lakehouse.upstream."


class LineageError(ValueError):
    """The question cannot be answered from these histories (unknown table or snapshot, bad range)."""


@dataclass(frozen=True)
class SnapshotRecord:
    """What the walks need of one snapshot."""

    snapshot_id: int
    parent_id: int | None
    sequence_number: int
    timestamp_ms: int
    summary: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, order=True)
class OffsetRange:
    """Kafka offsets ``first``..``last`` (both included) of one topic partition."""

    topic: str
    partition: int
    first: int
    last: int

    def overlaps(self, other: "OffsetRange") -> bool:
        return (self.topic, self.partition) == (other.topic, other.partition) and \
            self.first <= other.last and other.first <= self.last

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.first}-{self.last}"


@dataclass(frozen=True)
class Node:
    """One table state in a lineage tree; ``ranges`` are the Kafka offsets of a bronze node."""

    table: str
    snapshot_id: int | None  # None: not a snapshot (a Kafka topic, or not promoted yet)
    committed_at_ms: int | None = None
    ranges: tuple[OffsetRange, ...] = ()
    children: tuple["Node", ...] = ()
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "table": self.table, "snapshot_id": self.snapshot_id, "committed_at_ms": self.committed_at_ms,
            "ranges": [{"topic": r.topic, "partition": r.partition, "first": r.first, "last": r.last}
                       for r in self.ranges],
            "note": self.note, "children": [c.as_dict() for c in self.children],
        }


Histories = Mapping[str, Sequence[SnapshotRecord]]  # table -> its current lineage, oldest first


def parse_range(text: str) -> OffsetRange:
    """``topic:partition:first-last`` (or ``topic:partition:offset``) as a range; ValueError naming the part."""
    topic, sep, rest = text.rpartition(":")
    topic, sep2, partition = topic.rpartition(":")
    if not sep or not sep2 or not topic:
        raise LineageError(f"offset range {text!r} must be topic:partition:first-last")
    first, _, last = rest.partition("-")
    try:
        p, a, b = int(partition), int(first), int(last or first)
    except ValueError:
        raise LineageError(f"offset range {text!r}: partition and offsets must be integers") from None
    if p < 0 or a < 0 or b < a:
        raise LineageError(f"offset range {text!r}: need partition >= 0 and 0 <= first <= last")
    return OffsetRange(topic, p, a, b)


def compress(offsets: Iterable[tuple[str, int, int]]) -> tuple[OffsetRange, ...]:
    """(topic, partition, offset) triples as the fewest ranges: runs of consecutive offsets."""
    ranges: list[OffsetRange] = []
    for topic, partition, offset in sorted(set(offsets)):
        last = ranges[-1] if ranges else None
        if last is not None and (last.topic, last.partition) == (topic, partition) and offset == last.last + 1:
            ranges[-1] = OffsetRange(topic, partition, last.first, offset)
        else:
            ranges.append(OffsetRange(topic, partition, offset, offset))
    return tuple(ranges)


def merge(ranges: Iterable[OffsetRange]) -> tuple[OffsetRange, ...]:
    """Touching or overlapping ranges of a partition as one."""
    merged: list[OffsetRange] = []
    for r in sorted(ranges):
        last = merged[-1] if merged else None
        if last is not None and (last.topic, last.partition) == (r.topic, r.partition) and r.first <= last.last + 1:
            merged[-1] = OffsetRange(r.topic, r.partition, last.first, max(last.last, r.last))
        else:
            merged.append(r)
    return tuple(merged)


def _by_id(history: Sequence[SnapshotRecord]) -> dict[int, SnapshotRecord]:
    return {s.snapshot_id: s for s in history}


def _record(histories: Histories, table: str, snapshot_id: int | None) -> SnapshotRecord:
    history = histories.get(table)
    if not history:
        raise LineageError(f"{table} does not exist or has no snapshots")
    if snapshot_id is None:
        return history[-1]
    found = _by_id(history).get(snapshot_id)
    if found is None:
        raise LineageError(f"{snapshot_id} is not a snapshot in the current lineage of {table}")
    return found


def ancestry(history: Sequence[SnapshotRecord], snapshot_id: int) -> list[SnapshotRecord]:
    """``snapshot_id`` and its retained ancestors, newest first."""
    by_id, chain = _by_id(history), []
    current = by_id.get(snapshot_id)
    while current is not None:
        chain.append(current)
        current = by_id.get(current.parent_id) if current.parent_id is not None else None
    return chain


def pointer(history: Sequence[SnapshotRecord], snapshot_id: int, key: str) -> str | None:
    """The value of ``key`` in the newest summary at or before ``snapshot_id`` that has it
    (maintenance snapshots carry none: they keep the data of the commit below them)."""
    for record in ancestry(history, snapshot_id):
        if key in record.summary:
            return record.summary[key]
    return None


def upstreams(history: Sequence[SnapshotRecord], snapshot_id: int) -> dict[str, int]:
    """Upstream table -> the snapshot of it that ``snapshot_id``'s state was promoted up to."""
    keys = sorted({k for s in ancestry(history, snapshot_id) for k in s.summary if k.startswith(UPSTREAM_PREFIX)})
    found = {}
    for key in keys:
        raw = pointer(history, snapshot_id, key)
        try:
            found[key[len(UPSTREAM_PREFIX):]] = int(raw)
        except (TypeError, ValueError):
            continue
    return found


def bronze_ranges(history: Sequence[SnapshotRecord], snapshot_id: int) -> tuple[OffsetRange, ...]:
    """The Kafka offsets bronze snapshot ``snapshot_id`` appended: from where its batch started
    (its report's ``offsets_from``, else the previous commit's next offsets) to its next offsets
    minus one. An audited reset moves offsets and appends nothing: no ranges."""
    chain = ancestry(history, snapshot_id)
    if not chain or OFFSETS_KEY not in chain[0].summary or RESET_KEY in chain[0].summary:
        return ()
    after = decode_offsets(chain[0].summary[OFFSETS_KEY])
    before = next((decode_offsets(s.summary[OFFSETS_KEY]) for s in chain[1:] if OFFSETS_KEY in s.summary), {})
    report = _json(chain[0].summary.get(REPORT_KEY))
    started = {int(p): int(o) for p, o in (report.get("offsets_from") or {}).items()} if isinstance(report, dict) else {}
    reported_topic = report.get("topic") if isinstance(report, dict) else None
    ranges = []
    for topic, partitions in after.items():
        for partition, next_offset in partitions.items():
            start = started.get(partition) if topic == reported_topic and partition in started else \
                before.get(topic, {}).get(partition)
            if start is None or next_offset <= start:
                continue
            ranges.append(OffsetRange(topic, partition, start, next_offset - 1))
    return tuple(sorted(ranges))


def _json(raw: str | None) -> object:
    try:
        return json.loads(raw) if raw is not None else None
    except ValueError:
        return None


def upstream_tree(histories: Histories, table: str, snapshot_id: int | None = None, bronze: str | None = None) -> Node:
    """The state of ``table`` at ``snapshot_id`` (default current) and, recursively, the upstream
    snapshots behind it; under a bronze snapshot, each bronze commit in its ancestry with the
    offsets it appended, and on the bronze node the merged ranges of all of them."""
    record = _record(histories, table, snapshot_id)
    if bronze is None and _is_bronze(histories, table):
        bronze = table
    if table == bronze:
        commits = [Node(table, s.snapshot_id, s.timestamp_ms, bronze_ranges(histories[table], s.snapshot_id))
                   for s in reversed(ancestry(histories[table], record.snapshot_id))]
        commits = [c for c in commits if c.ranges]
        return Node(table, record.snapshot_id, record.timestamp_ms, merge(r for c in commits for r in c.ranges),
                    tuple(commits), note=f"{len(commits)} bronze commits up to here")
    children = []
    for upstream, upstream_id in upstreams(histories[table], record.snapshot_id).items():
        if upstream_id not in _by_id(histories.get(upstream, ())):
            children.append(Node(upstream, upstream_id, note="snapshot expired or rolled back: lineage ends here"))
            continue
        children.append(upstream_tree(histories, upstream, upstream_id, bronze))
    return Node(table, record.snapshot_id, record.timestamp_ms, children=tuple(children))


def _is_bronze(histories: Histories, table: str) -> bool:
    return any(OFFSETS_KEY in s.summary for s in histories.get(table, ()))


def where_tree(histories: Histories, table: str, snapshot_id: int | None, facts: str,
               rows: Iterable[tuple[int | None, str, int, int]], where: str) -> Node:
    """Like :func:`upstream_tree`, narrowed to the facts matching a filter: ``rows`` are
    (bronze_snapshot_id, topic, partition, offset) of ``facts`` at the snapshot ``table``'s state
    was built from, matching ``where``; the tree ends in the exact offset ranges of those rows,
    per bronze snapshot that appended them."""
    record = _record(histories, table, snapshot_id)
    per_snapshot: dict[int | None, list[tuple[str, int, int]]] = {}
    for bronze_id, topic, partition, offset in rows:
        per_snapshot.setdefault(bronze_id, []).append((topic, partition, offset))
    bronze = next((t for t in histories if _is_bronze(histories, t)), "bronze")
    times = {s.snapshot_id: s.timestamp_ms for s in histories.get(bronze, ())}
    leaves = tuple(Node(bronze, b, times.get(b), compress(offs))
                   for b, offs in sorted(per_snapshot.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
    all_ranges = merge(r for leaf in leaves for r in leaf.ranges)
    facts_id = upstreams(histories[table], record.snapshot_id).get(facts) if table != facts else record.snapshot_id
    if facts_id is None:
        raise LineageError(f"{table} records no upstream snapshot of {facts}")
    facts_node = Node(facts, facts_id, next((s.timestamp_ms for s in histories.get(facts, ()) if s.snapshot_id == facts_id), None),
                      all_ranges, leaves, note=f"{sum(len(v) for v in per_snapshot.values())} rows where {where}")
    if table == facts:
        return facts_node
    return Node(table, record.snapshot_id, record.timestamp_ms, children=(facts_node,))


def facts_snapshot(histories: Histories, table: str, snapshot_id: int | None, facts: str) -> int:
    """The snapshot of ``facts`` that ``table``'s state at ``snapshot_id`` was built from."""
    record = _record(histories, table, snapshot_id)
    if table == facts:
        return record.snapshot_id
    found = upstreams(histories[table], record.snapshot_id).get(facts)
    if found is None:
        raise LineageError(f"{table} records no upstream snapshot of {facts}: --where reads {facts}")
    return found


def bronze_snapshots_holding(histories: Histories, bronze: str, wanted: OffsetRange) -> list[int]:
    """The bronze snapshots that appended any offset of ``wanted``, oldest first."""
    return [s.snapshot_id for s in histories.get(bronze, ())
            if any(r.overlaps(wanted) for r in bronze_ranges(histories[bronze], s.snapshot_id))]


def downstream_tree(histories: Histories, table: str, snapshot_id: int, ranges: tuple[OffsetRange, ...] = ()) -> Node:
    """Where the state of ``table`` at ``snapshot_id`` went: per downstream table, the first
    snapshot whose promotion reached it (a later one still holds it), recursively."""
    record = _record(histories, table, snapshot_id)
    key = UPSTREAM_PREFIX + table
    sequence = {s.snapshot_id: s.sequence_number for s in histories[table]}
    children = []
    for downstream in sorted(histories):
        history = histories[downstream]
        if downstream == table or not any(key in s.summary for s in history):
            continue
        reached = next((s for s in history if key in s.summary and
                        sequence.get(int(s.summary[key]), -1) >= record.sequence_number), None)
        if reached is None:
            children.append(Node(downstream, None, note="not promoted yet"))
        else:
            children.append(downstream_tree(histories, downstream, reached.snapshot_id))
    return Node(table, record.snapshot_id, record.timestamp_ms, ranges, tuple(children))


def kafka_downstream(histories: Histories, bronze: str, wanted: OffsetRange) -> Node:
    """From Kafka offsets: the bronze snapshots that appended them and where each went."""
    holding = bronze_snapshots_holding(histories, bronze, wanted)
    if not holding:
        raise LineageError(f"no bronze snapshot in the current lineage holds {wanted}")
    children = tuple(
        downstream_tree(histories, bronze, s, tuple(r for r in bronze_ranges(histories[bronze], s) if r.overlaps(wanted)))
        for s in holding)
    return Node(f"kafka topic {wanted.topic}", None, ranges=(wanted,), children=children)
