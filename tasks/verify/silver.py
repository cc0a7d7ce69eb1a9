"""Silver's checks: every bronze record up to silver's watermark is a fact, a quarantine row or a
duplicate exactly once; event_ids are unique; run reports add up; dim_users is a valid SCD2 history."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, GreaterThanOrEqual, In, LessThanOrEqual, Or
from pyiceberg.table import Table

from tasks.commits import REPORT_KEY, upstream_key
from tasks.verify.reading import (
    BRONZE,
    DIM_USERS,
    EMPTY,
    FACTS,
    REJECTED,
    Context,
    Key,
    current_id,
    fmt_key,
    has_data,
    lineage,
    offsets_by_partition,
    parse_json,
    plural,
    summary,
    watermark,
)
from tasks.verify.report import EXAMPLES, Check


def _sequence(table: Table, snapshot_id: int) -> int:
    snapshot = table.metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise LookupError(f"{table.name()} has no snapshot {snapshot_id}")
    return snapshot.sequence_number or 0


IN_LIST_LIMIT = 10_000  # offsets per partition listed in a row filter; above it, the offset range only


def _coordinate_filter(wanted: dict[Key, np.ndarray]) -> BooleanExpression:
    """The wanted bronze records' partitions and offset ranges (for file pruning by column stats),
    with the offsets themselves when they are few; callers still match the offsets exactly."""
    parts = []
    for (topic, partition), offsets in sorted(wanted.items()):
        low, high = int(offsets.min()), int(offsets.max())
        part = And(EqualTo("topic", topic), EqualTo("partition", partition),
                   GreaterThanOrEqual("offset", low), LessThanOrEqual("offset", high))
        if len(offsets) <= IN_LIST_LIMIT:
            part = And(part, In("offset", [int(v) for v in offsets.tolist()]))
        parts.append(part)
    return functools.reduce(Or, parts) if len(parts) > 1 else parts[0]


def _bronze_rows(bronze: Table, snapshot_id: int, wanted: dict[Key, np.ndarray]) -> Iterable[dict]:
    """The wanted bronze records (topic, partition, offset, kafka_timestamp, value), streamed."""
    scan = bronze.scan(snapshot_id=snapshot_id, row_filter=_coordinate_filter(wanted),
                       selected_fields=("topic", "partition", "offset", "kafka_timestamp", "value"))
    for batch in scan.to_arrow_batch_reader():
        if batch.num_rows == 0:
            continue
        rows = pa.Table.from_batches([batch])
        topics = rows.column("topic").to_numpy(zero_copy_only=False)
        partitions = rows.column("partition").to_numpy(zero_copy_only=False)
        offsets = rows.column("offset").to_numpy(zero_copy_only=False)
        keep = np.zeros(rows.num_rows, dtype=bool)
        for key in set(zip(topics.tolist(), partitions.tolist())):
            mine = (topics == key[0]) & (partitions == key[1])
            keep |= mine & np.isin(offsets, wanted.get(key, EMPTY))
        if keep.any():
            yield from rows.filter(pa.array(keep)).to_pylist()


def _event_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    event_id = doc.get("event_id") if isinstance(doc, dict) else None
    return event_id if isinstance(event_id, str) else None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _arrival(ts: datetime | None, topic: str | None, partition: int | None, offset: int | None) -> tuple:
    """The arrival order silver keeps the first of: (Kafka timestamp in µs, topic, partition, offset)."""
    micros = (ts - _EPOCH) // timedelta(microseconds=1) if ts is not None else np.iinfo(np.int64).max
    return (micros, topic or "", partition if partition is not None else -1, offset if offset is not None else -1)


def records_accounted(context: Context) -> list[Check]:
    name, layer = "silver.records_accounted", "silver"
    bronze, facts, rejected = context.table(BRONZE), context.table(FACTS), context.table(REJECTED)
    marks = {FACTS: watermark(facts, BRONZE), REJECTED: watermark(rejected, BRONZE)}
    silver_tables = {FACTS: facts, REJECTED: rejected}
    coords: dict[str, dict[Key, np.ndarray]] = {}
    incomplete = 0
    for table_name, table in silver_tables.items():
        found, missing_coords = (offsets_by_partition(table, current_id(table), "source_topic", "source_partition",
                                                       "source_offset") if has_data(table) else ({}, 0))
        coords[table_name], incomplete = found, incomplete + missing_coords
    silver_rows = sum(len(v) for c in coords.values() for v in c.values()) + incomplete
    if all(mark is None for mark in marks.values()):
        if silver_rows:
            return [Check(name, layer, False, f"silver holds {silver_rows} rows but records no "
                                              f"{upstream_key(BRONZE)} watermark")]
        return [Check(name, layer, True, "empty")]
    if bronze is None:
        return [Check(name, layer, False, f"silver records bronze watermarks {marks} but {BRONZE} does not exist")]
    for table_name, mark in marks.items():
        if mark is not None and bronze.metadata.snapshot_by_id(mark) is None:
            return [Check(name, layer, False, f"{table_name} is promoted up to bronze snapshot {mark}, "
                                              "which bronze no longer has: nothing to reconcile against")]
    known = [m for m in marks.values() if m is not None]
    low = None if None in marks.values() else min(known, key=lambda m: _sequence(bronze, m))
    interrupted = len(set(marks.values())) > 1
    base = context.bronze_offsets(low) if low is not None else {}
    at_mark = {t: context.bronze_offsets(m) if m is not None else {} for t, m in marks.items()}

    totals = dict.fromkeys(("bronze_records", "facts", "rejected", "duplicates", "missing", "counted_more_than_once",
                            "not_in_bronze", "earlier_arrival_dropped", "after_older_watermark"), 0)
    examples: dict[str, list[str]] = defaultdict(list)
    candidates: dict[Key, np.ndarray] = {}
    keys = set(base) | set(coords[FACTS]) | set(coords[REJECTED])
    for key in sorted(keys):
        f, r = coords[FACTS].get(key, EMPTY), coords[REJECTED].get(key, EMPTY)
        both = np.concatenate([f, r])
        values, counts = np.unique(both, return_counts=True)
        twice = values[counts > 1]
        if len(twice):
            totals["counted_more_than_once"] += int((counts[counts > 1] - 1).sum())
            examples["counted_more_than_once"] += [f"{fmt_key(key)}@{o}" for o in twice[:EXAMPLES].tolist()]
        for table_name, mine in ((FACTS, f), (REJECTED, r)):
            upstream = np.unique(at_mark[table_name].get(key, EMPTY))
            phantom = np.setdiff1d(mine, upstream)
            if len(phantom):
                totals["not_in_bronze"] += len(phantom)
                examples["not_in_bronze"] += [f"{table_name} {fmt_key(key)}@{o}" for o in phantom[:EXAMPLES].tolist()]
        records = np.unique(base.get(key, EMPTY))
        in_facts, in_rejected = np.isin(records, f), np.isin(records, r)
        totals["bronze_records"] += len(records)
        totals["facts"] += int(in_facts.sum())
        totals["rejected"] += int(in_rejected.sum())
        rest = records[~(in_facts | in_rejected)]
        if len(rest):
            candidates[key] = rest
        later = values[~np.isin(values, records)]  # silver rows of records after the older watermark
        totals["after_older_watermark"] += len(later)

    # Records in neither table: duplicates of a fact's event, or missing. Read just those values.
    ids: dict[tuple[str, int, int], tuple[str | None, tuple]] = {}
    if candidates:
        for row in _bronze_rows(bronze, low, candidates):
            ids[(row["topic"], row["partition"], row["offset"])] = (
                _event_id(row["value"]), _arrival(row["kafka_timestamp"], row["topic"], row["partition"], row["offset"]))
    wanted_ids = sorted({event_id for event_id, _ in ids.values() if event_id is not None})
    kept: dict[str, tuple] = {}
    if wanted_ids and has_data(facts):
        few = len(wanted_ids) <= IN_LIST_LIMIT  # else stream the narrow columns and match in Arrow
        scan = facts.scan(row_filter=In("event_id", wanted_ids) if few else AlwaysTrue(),
                          selected_fields=("event_id", "kafka_timestamp", "source_topic", "source_partition", "source_offset"))
        value_set = pa.array(wanted_ids, pa.string())
        for batch in scan.to_arrow_batch_reader():
            if not few:
                batch = batch.filter(pc.is_in(batch.column("event_id"), value_set=value_set))
            for row in batch.to_pylist():
                arrival = _arrival(row["kafka_timestamp"], row["source_topic"], row["source_partition"], row["source_offset"])
                kept[row["event_id"]] = min(kept.get(row["event_id"], arrival), arrival)
    for key, offsets in sorted(candidates.items()):
        for offset in offsets.tolist():
            event_id, arrival = ids.get((key[0], key[1], offset), (None, None))
            if event_id is not None and event_id in kept:
                totals["duplicates"] += 1
                if arrival < kept[event_id]:
                    totals["earlier_arrival_dropped"] += 1
                    examples["earlier_arrival_dropped"].append(f"{fmt_key(key)}@{offset} (event {event_id})")
            else:
                totals["missing"] += 1
                why = "no event_id in its value" if event_id is None else f"event {event_id} is not a fact"
                examples["missing"].append(f"{fmt_key(key)}@{offset} ({why})")

    counts = {"bronze_snapshot": low, "watermarks": marks, **totals, "rows_without_coordinates": incomplete}
    problems = []
    if totals["missing"]:
        problems.append(f"{totals['missing']} bronze records in neither facts nor quarantine and no duplicate "
                        f"of a fact: {', '.join(examples['missing'][:EXAMPLES])}")
    if totals["counted_more_than_once"]:
        problems.append(f"{totals['counted_more_than_once']} bronze records counted more than once: "
                        f"{', '.join(examples['counted_more_than_once'][:EXAMPLES])}")
    if totals["not_in_bronze"]:
        problems.append(f"{totals['not_in_bronze']} silver rows whose bronze record is not in bronze at the "
                        f"table's watermark: {', '.join(examples['not_in_bronze'][:EXAMPLES])}")
    if totals["earlier_arrival_dropped"]:
        problems.append(f"{totals['earlier_arrival_dropped']} duplicates arrived before the fact kept for their "
                        f"event (first arrival must win): {', '.join(examples['earlier_arrival_dropped'][:EXAMPLES])}")
    if incomplete:
        problems.append(f"{incomplete} silver rows without bronze coordinates")
    balance = (f"bronze {totals['bronze_records']} = facts {totals['facts']} + rejected {totals['rejected']} "
               f"+ duplicates {totals['duplicates']}")
    if problems:
        return [Check(name, layer, False, "; ".join(problems), counts)]
    detail = f"{balance} (up to bronze snapshot {low})"
    if interrupted:
        detail += (f"; facts and quarantine are at different bronze snapshots {marks} (a run stopped between its "
                   f"commits; the next silver run finishes it): {totals['after_older_watermark']} rows past the older")
    return [Check(name, layer, True, detail, counts, warning=interrupted)]


def event_ids_unique(context: Context) -> list[Check]:
    name, layer = "silver.fact_event_ids_unique", "silver"
    facts = context.table(FACTS)
    if not has_data(facts):
        return [Check(name, layer, True, "empty")]
    ids = facts.scan(selected_fields=("event_id",)).to_arrow().column("event_id")
    if len(ids) == 0:
        return [Check(name, layer, True, "empty")]
    distinct = pc.count_distinct(ids, mode="all").as_py()
    counts = {"facts": len(ids), "distinct_event_ids": distinct}
    if distinct == len(ids):
        return [Check(name, layer, True, f"{len(ids)} facts, each event_id once", counts)]
    tally = pc.value_counts(ids)
    repeated = [f"{v['values']} x{v['counts']}" for v in tally.to_pylist() if v["counts"] > 1]
    counts["repeated_event_ids"] = len(repeated)
    return [Check(name, layer, False, f"{len(ids) - distinct} extra facts for {len(repeated)} event_ids held more "
                                      f"than once, e.g. {', '.join(repeated[:EXAMPLES])}", counts)]


def _runs(table: Table, upstream: str) -> list[tuple[int | None, int, dict]]:
    """(after, upto, report) of every run in the table's retained lineage, oldest first; ``after`` is
    -1 when the run before it was expired (unknown), None when it was the table's first."""
    key = upstream_key(upstream)
    chain = lineage(table)
    complete = bool(chain) and chain[0].parent_snapshot_id is None
    runs: list[tuple[int | None, int, dict]] = []
    previous: int | None = None if complete else -1
    for snapshot in chain:
        props = summary(snapshot)
        if key not in props:
            continue
        upto = int(props[key])
        report = parse_json(props.get(REPORT_KEY))
        report = report if isinstance(report, dict) else {}
        if runs and runs[-1][1] == upto:  # a delete and an append of one commit_rows: one run
            runs[-1] = (runs[-1][0], upto, report or runs[-1][2])
            continue
        runs.append((previous, upto, report))
        previous = upto
    return runs


def _bronze_added(bronze: Table, after: int | None, upto: int) -> int | None:
    """Rows the bronze appends in (after, upto] added; None if that range is no longer retained."""
    snapshot = bronze.metadata.snapshot_by_id(upto)
    added = 0
    while snapshot is not None and snapshot.snapshot_id != after:
        props = summary(snapshot)
        if snapshot.summary is not None and snapshot.summary.operation.value == "append":
            added += int(props.get("added-records", 0))
        if snapshot.parent_snapshot_id is None:
            return added if after is None else None
        snapshot = bronze.metadata.snapshot_by_id(snapshot.parent_snapshot_id)
    return added if snapshot is not None else None


def batch_counts(context: Context) -> list[Check]:
    name, layer = "silver.batch_counts", "silver"
    bronze, facts, rejected = context.table(BRONZE), context.table(FACTS), context.table(REJECTED)
    if not (has_data(facts) and has_data(rejected) and has_data(bronze)):
        return [Check(name, layer, True, "empty")]
    quarantine = {(after, upto): report for after, upto, report in _runs(rejected, BRONZE)}
    checked, skipped, wrong = 0, 0, []
    for after, upto, report in _runs(facts, BRONZE):
        other = quarantine.get((after, upto))
        needed = ("facts", "duplicates_dropped")
        if after == -1 or other is None or "rejected" not in other or any(k not in report for k in needed):
            skipped += 1
            continue
        added = _bronze_added(bronze, after, upto)
        if added is None:
            skipped += 1
            continue
        checked += 1
        total = int(other["rejected"]) + int(report["facts"]) + int(report["duplicates_dropped"])
        if total != added:
            wrong.append(f"bronze ({after}, {upto}]: {added} records but rejected {other['rejected']} + facts "
                         f"{report['facts']} + duplicates {report['duplicates_dropped']} = {total}")
    counts = {"runs_checked": checked, "runs_skipped": skipped, "runs_wrong": len(wrong)}
    if wrong:
        return [Check(name, layer, False, "; ".join(wrong[:EXAMPLES]), counts)]
    detail = (f"{plural(checked, 'silver run')}: rejected + facts + duplicates_dropped = bronze records"
              if checked else "no silver run with a report and a retained bronze range to check")
    if skipped:
        detail += f"; {plural(skipped, 'run')} skipped (no report, or their bronze range is no longer retained)"
    return [Check(name, layer, True, detail, counts)]


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    """Timestamps as int64 microseconds; null becomes int64 max (open-ended)."""
    as_int = pc.cast(column.cast(pa.timestamp("us", tz="UTC")), pa.int64())
    return pc.fill_null(as_int, np.iinfo(np.int64).max).to_numpy().astype(np.int64, copy=False)


def dim_users(context: Context) -> list[Check]:
    name, layer = "silver.dim_users_scd2", "silver"
    dim = context.table(DIM_USERS)
    if not has_data(dim):
        return [Check(name, layer, True, "empty")]
    rows = dim.scan(selected_fields=("user_sk", "user_id", "valid_from", "valid_to", "is_current")).to_arrow()
    if rows.num_rows == 0:
        return [Check(name, layer, True, "empty")]
    problems: list[str] = []
    counts: dict[str, int] = {"versions": rows.num_rows}
    nulls = rows.num_rows - rows.select(["user_id", "valid_from"]).drop_null().num_rows
    if nulls:
        problems.append(f"{nulls} versions without user_id or valid_from")
        rows = rows.filter(pc.and_(pc.is_valid(rows.column("user_id")), pc.is_valid(rows.column("valid_from"))))
    sks = rows.column("user_sk")
    if pc.count_distinct(sks, mode="all").as_py() != rows.num_rows:
        problems.append("user_sk is not unique")
    open_ended = pc.is_null(rows.column("valid_to"))
    rows = rows.append_column("open", open_ended).sort_by(
        [("user_id", "ascending"), ("valid_from", "ascending"), ("open", "ascending"), ("valid_to", "ascending")])
    users = rows.column("user_id").to_numpy(zero_copy_only=False)
    starts, ends = _micros(rows.column("valid_from")), _micros(rows.column("valid_to"))
    is_open = rows.column("open").to_numpy(zero_copy_only=False).astype(bool)
    current = pc.fill_null(rows.column("is_current"), False).to_numpy(zero_copy_only=False).astype(bool)
    counts["users"] = int(len(np.unique(users)))

    def report(mask: np.ndarray, key: str, what: str) -> None:
        if mask.any():
            counts[key] = int(mask.sum())
            problems.append(f"{int(mask.sum())} {what}, users {', '.join(sorted(set(users[mask].tolist()))[:EXAMPLES])}")

    report(~is_open & (ends < starts), "ending_before_start", "versions ending before they start")
    report(current != is_open, "is_current_wrong", "versions whose is_current disagrees with valid_to")
    same_user = users[1:] == users[:-1]
    nxt = np.nonzero(same_user)[0]  # index i: row i and i + 1 are versions of one user
    overlap, gap = np.zeros(len(users), bool), np.zeros(len(users), bool)
    overlap[nxt] = starts[nxt + 1] < ends[nxt]  # an open version followed by another overlaps it too
    gap[nxt] = ~is_open[nxt] & (starts[nxt + 1] > ends[nxt])
    report(overlap, "overlapping_versions", "overlapping versions")
    report(gap, "gaps_between_versions", "gaps between versions")
    unique_users, first_index = np.unique(users, return_index=True)
    firsts = np.sort(first_index)  # rows are sorted by user: each user's rows start here
    open_per_user = np.add.reduceat(is_open.astype(np.int64), firsts) if len(users) else np.empty(0, np.int64)
    ordered_users = users[firsts]
    bad_current = open_per_user != 1
    if bad_current.any():
        counts["users_without_exactly_one_current"] = int(bad_current.sum())
        problems.append(f"{int(bad_current.sum())} users without exactly one current version: "
                        f"{', '.join(ordered_users[bad_current][:EXAMPLES].tolist())}")
    # coverage: every known user of the facts has versions, when dim_users is as far as the facts
    facts = context.table(FACTS)
    note = ""
    if has_data(facts):
        if watermark(dim, BRONZE) == watermark(facts, BRONZE):
            seen: set = set()
            for batch in facts.scan(selected_fields=("user_id",)).to_arrow_batch_reader():
                seen.update(pc.unique(batch.column("user_id")).drop_null().to_pylist())
            without = sorted(seen - set(unique_users.tolist()))
            counts["fact_users"] = len(seen)
            if without:
                counts["fact_users_without_versions"] = len(without)
                problems.append(f"{len(without)} users of the facts have no versions: {', '.join(without[:EXAMPLES])}")
        else:
            note = "; not at the facts' bronze snapshot, so user coverage is not checked"
    if problems:
        return [Check(name, layer, False, "; ".join(problems), counts)]
    return [Check(name, layer, True, f"{counts['users']} users, {counts['versions']} versions: contiguous, "
                                     f"one current each{note}", counts, warning=bool(note))]
