"""Bronze's checks: per Kafka partition the offsets are contiguous (gaps explained by audited resets or
recorded retention losses, else confirmed with Kafka or warned about), unique, and within the recorded ones."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from pyiceberg.table import Table

from tasks.commits import OFFSETS_KEY, REPORT_KEY, decode_offsets, latest_property
from tasks.offsets import RESET_KEY  # the audited resets `lakehouse ingest reset` records
from tasks.verify.kafka_gaps import describe_probe
from tasks.verify.reading import BRONZE, EMPTY, Context, Key, current_id, fmt_key, has_data, lineage, parse_json, plural, summary
from tasks.verify.report import EXAMPLES, Check


@dataclass
class _Explained:
    """Offset ranges [lo, hi) a gap may be explained by, per partition."""

    resets: dict[Key, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    retention: dict[Key, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    first_start: dict[Key, int] = field(default_factory=dict)
    malformed_resets: list[str] = field(default_factory=list)


def _explanations(table: Table) -> _Explained:
    out = _Explained()
    seen: set[tuple] = set()
    for snapshot in table.metadata.snapshots:  # every retained snapshot: a reset may sit anywhere
        raw = summary(snapshot).get(RESET_KEY)
        if raw is None:
            continue
        value = parse_json(raw)
        items = value if isinstance(value, list) else [value]
        for item in items:
            # tasks.offsets.ResetDecision: bronze moved from ``from_offset`` to ``to_offset``, so
            # [from_offset, to_offset) is never ingested. A move back (a replay) or a reset of a
            # partition never ingested leaves no gap.
            try:
                start = item["from_offset"]
                record = (str(item["topic"]), int(item["partition"]), int(start) if start is not None else None,
                          int(item["to_offset"]))
            except (TypeError, KeyError, ValueError):
                out.malformed_resets.append(f"snapshot {snapshot.snapshot_id}: {raw[:80]}")
                continue
            if record[2] is None or record[3] <= record[2]:
                continue
            if record not in seen:  # a reset writer may carry earlier resets forward
                seen.add(record)
                out.resets[(record[0], record[1])].append((record[2], record[3]))
    previous: dict[str, dict[int, int]] | None = None
    for snapshot in lineage(table):
        props = summary(snapshot)
        if OFFSETS_KEY not in props:
            continue
        report = parse_json(props.get(REPORT_KEY))
        if isinstance(report, dict) and isinstance(report.get("offsets_from"), dict) and report.get("topic"):
            topic = str(report["topic"])
            lost = int(report.get("lost_to_retention") or 0)
            for p, start in report["offsets_from"].items():
                key, start = (topic, int(p)), int(start)
                out.first_start[key] = min(out.first_start.get(key, start), start)
                before = previous.get(topic, {}).get(int(p)) if previous is not None else None
                if before is not None and start > before:
                    out.retention[key].append((before, start))
                elif previous is None and lost > 0:  # the commit before it was expired: bounded by the total
                    out.retention[key].append((start - lost, start))
        previous = decode_offsets(props[OFFSETS_KEY])
    return out


def _merge(intervals: Iterable[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    merged: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return (np.array([m[0] for m in merged], dtype=np.int64), np.array([m[1] for m in merged], dtype=np.int64))


def _subtract(a: np.ndarray, b: np.ndarray, intervals: Iterable[tuple[int, int]]
              ) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Gaps [a, b) minus the union of ``intervals``: (gaps touched, offsets covered, remaining a, b).

    Vectorized for the many gaps untouched or wholly covered; the few partly covered are split in Python."""
    starts, ends = _merge(intervals)
    if len(a) == 0 or len(starts) == 0:
        return 0, 0, a, b
    last_before_end = np.searchsorted(starts, b, side="left") - 1  # last interval starting before b
    touched = (last_before_end >= 0) & (ends[np.maximum(last_before_end, 0)] > a)
    holder = np.searchsorted(starts, a, side="right") - 1  # the interval a falls in, if any
    whole = (holder >= 0) & (ends[np.maximum(holder, 0)] >= b)
    keep_a, keep_b = [a[~touched]], [b[~touched]]
    covered = int((b[whole] - a[whole]).sum())
    for lo, hi in zip(a[touched & ~whole].tolist(), b[touched & ~whole].tolist()):
        cursor = lo
        for s, e in zip(starts.tolist(), ends.tolist()):
            if e <= cursor or s >= hi:
                continue
            if s > cursor:
                keep_a.append(np.array([cursor]))
                keep_b.append(np.array([s]))
            covered += min(e, hi) - max(s, cursor)
            cursor = max(cursor, e)
        if cursor < hi:
            keep_a.append(np.array([cursor]))
            keep_b.append(np.array([hi]))
    rest_a = np.concatenate(keep_a).astype(np.int64)
    rest_b = np.concatenate(keep_b).astype(np.int64)
    order = np.argsort(rest_a, kind="stable")
    return int(touched.sum()), covered, rest_a[order], rest_b[order]


def _gaps(unique: np.ndarray, start: int | None, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Missing ranges [a, b) of ``unique`` (sorted, all < end) within [start, end)."""
    if len(unique) == 0:
        if start is not None and start < end:
            return np.array([start], dtype=np.int64), np.array([end], dtype=np.int64)
        return EMPTY, EMPTY
    inner = np.nonzero(np.diff(unique) > 1)[0]
    a, b = unique[inner] + 1, unique[inner + 1]
    if start is not None and start < unique[0]:
        a, b = np.concatenate([[start], a]), np.concatenate([[unique[0]], b])
    if unique[-1] + 1 < end:
        a, b = np.concatenate([a, [unique[-1] + 1]]), np.concatenate([b, [end]])
    return a.astype(np.int64), b.astype(np.int64)


BRONZE_CHECKS = ("bronze.offsets_contiguous", "bronze.offsets_unique", "bronze.offsets_within_recorded")


def bronze_checks(context: Context) -> list[Check]:
    table = context.table(BRONZE)
    if not has_data(table):
        return [Check(name, "bronze", True, "empty") for name in BRONZE_CHECKS]
    raw_offsets = latest_property(table, OFFSETS_KEY)
    recorded = decode_offsets(raw_offsets) if raw_offsets is not None else {}
    present = context.bronze_offsets(current_id(table))
    if not present and not recorded:
        return [Check(name, "bronze", True, "empty") for name in BRONZE_CHECKS]
    explained = _explanations(table)
    options = context.options
    next_of = {(t, p): o for t, ps in recorded.items() for p, o in ps.items()}
    totals = dict.fromkeys(("records", "duplicate_rows", "rows_past_next_offset", "unrecorded_partition_rows", "gaps",
                            "reset_gaps", "reset_offsets", "retention_gaps", "retention_offsets", "unexplained_gaps",
                            "unexplained_offsets", "unexplained_gaps_over_marker_size"), 0)
    largest = 0
    worst: list[str] = []  # unexplained gaps larger than max_marker_gap
    some: list[str] = []  # the first unexplained gaps
    repeated: list[str] = []
    beyond: list[str] = []
    unrecorded: list[str] = []
    per_partition = {}
    unexplained_gaps: dict[Key, tuple[np.ndarray, np.ndarray]] = {}
    for key in sorted(set(present) | set(next_of)):
        offsets = present.get(key, EMPTY)
        totals["records"] += len(offsets)
        unique = np.unique(offsets)
        repeats = len(offsets) - len(unique)
        if repeats:
            totals["duplicate_rows"] += repeats
            values, counts = np.unique(offsets, return_counts=True)
            repeated += [f"{fmt_key(key)}@{v} x{c}" for v, c in zip(values[counts > 1][:EXAMPLES].tolist(),
                                                                      counts[counts > 1][:EXAMPLES].tolist())]
        end = next_of.get(key)
        if end is None:
            totals["unrecorded_partition_rows"] += len(offsets)
            unrecorded.append(fmt_key(key))
            continue
        over = unique[unique >= end]
        if len(over):
            totals["rows_past_next_offset"] += int(np.count_nonzero(offsets >= end))
            beyond.append(f"{fmt_key(key)}: {len(over)} offsets >= next offset {end} (first {int(over[0])})")
        unique = unique[unique < end]
        start = explained.first_start.get(key)
        if len(unique):
            start = min(int(unique[0]), start) if start is not None else int(unique[0])
        a, b = _gaps(unique, start, end)
        totals["gaps"] += len(a)
        n, covered, a, b = _subtract(a, b, explained.resets.get(key, ()))
        totals["reset_gaps"] += n
        totals["reset_offsets"] += covered
        n, covered, a, b = _subtract(a, b, explained.retention.get(key, ()))
        totals["retention_gaps"] += n
        totals["retention_offsets"] += covered
        sizes = b - a
        if len(sizes):
            unexplained_gaps[key] = (a, b)
        totals["unexplained_gaps"] += len(sizes)
        totals["unexplained_offsets"] += int(sizes.sum())
        big = sizes > options.max_marker_gap
        totals["unexplained_gaps_over_marker_size"] += int(big.sum())
        if len(sizes):
            largest = max(largest, int(sizes.max()))
        worst += [f"{fmt_key(key)} [{lo}, {hi})" for lo, hi in zip(a[big][:EXAMPLES].tolist(), b[big][:EXAMPLES].tolist())]
        if len(some) < EXAMPLES:
            some += [f"{fmt_key(key)} [{lo}, {hi})" for lo, hi in zip(a[:EXAMPLES].tolist(), b[:EXAMPLES].tolist())]
        per_partition[fmt_key(key)] = {"first": start, "next": end, "records": len(offsets)}
    counts = {"partitions": len(per_partition), **totals, "largest_unexplained_gap": largest,
              "max_marker_gap": options.max_marker_gap, "by_partition": per_partition}

    # offsets_contiguous
    parts = [f"{plural(len(per_partition), 'partition')}, {totals['records']} records"]
    if totals["reset_gaps"]:
        parts.append(f"{plural(totals['reset_gaps'], 'gap')} ({totals['reset_offsets']} offsets) covered by audited resets")
    if totals["retention_gaps"]:
        parts.append(f"{plural(totals['retention_gaps'], 'gap')} ({totals['retention_offsets']} offsets) "
                     f"lost to Kafka retention as the ingest recorded")
    unexplained = totals["unexplained_gaps"]
    ok, warning = True, False
    if unexplained:
        parts.append(f"{plural(unexplained, 'unexplained gap')} ({totals['unexplained_offsets']} offsets, "
                     f"largest {largest})")
    if context.kafka is not None:
        # Kafka says which gaps are its own: confirmed ones pass, lost records fail, the rest warn
        probe = context.kafka.probe(unexplained_gaps)
        counts["kafka"] = probe.as_counts()
        failed, warning = describe_probe(probe, parts)
        if failed:
            ok = False
        elif warning and not options.allow_unexplained_gaps:
            ok = False
            parts.append("unconfirmed gaps not allowed (strict)")
    elif unexplained:
        warning = True
        over = totals["unexplained_gaps_over_marker_size"]
        if over:
            parts.append(f"{over} larger than max_marker_gap={options.max_marker_gap}, e.g. "
                         f"{', '.join(worst[:EXAMPLES])}: records missing from bronze, or an aborted transaction "
                         "(it leaves a gap of its records + 1); run with --kafka to confirm")
        else:
            parts.append(f"each at most {options.max_marker_gap} offset(s): consistent with transaction markers, "
                         "but tables alone can't prove it (run with --kafka to confirm)")
        if not options.allow_unexplained_gaps:
            ok = False
            parts.append(f"not allowed (strict): e.g. {', '.join((worst or some)[:EXAMPLES])}")
    if explained.malformed_resets:
        warning = True
        parts.append(f"unreadable {RESET_KEY} records: {'; '.join(explained.malformed_resets[:EXAMPLES])}")
    if not recorded:
        ok = False
        parts.append(f"no snapshot records {OFFSETS_KEY}")
    contiguous = Check("bronze.offsets_contiguous", "bronze", ok, "; ".join(parts), counts, warning)

    dup_rows = totals["duplicate_rows"]
    unique_check = Check(
        "bronze.offsets_unique", "bronze", dup_rows == 0,
        f"{totals['records']} records, no (topic, partition, offset) twice" if not dup_rows
        else f"{dup_rows} extra rows for repeated offsets, e.g. {', '.join(repeated[:EXAMPLES])}",
        {"records": totals["records"], "duplicate_rows": dup_rows},
    )
    problems = beyond + ([f"rows in partitions without a recorded next offset: {', '.join(unrecorded)}"]
                         if unrecorded else [])
    within = Check(
        "bronze.offsets_within_recorded", "bronze", not problems,
        "every offset is below its partition's recorded next offset" if not problems else "; ".join(problems[:EXAMPLES]),
        {"next_offsets": {fmt_key(k): v for k, v in sorted(next_of.items())},
         "rows_past_next_offset": totals["rows_past_next_offset"],
         "unrecorded_partition_rows": totals["unrecorded_partition_rows"]},
    )
    return [contiguous, unique_check, within]
