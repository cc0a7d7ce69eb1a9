"""Iceberg commits and their bookkeeping: Kafka offsets and run ids live in the snapshot summary.

The table is the source of truth for progress. A bronze commit records the next offset of every
partition; the next run starts from there. A commit whose starting offsets are no longer the
table's latest is refused, so two concurrent runs can never both land the same records.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, In, LessThan, Or
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction

OFFSETS_KEY = "lakehouse.kafka.offsets"
RUN_ID_KEY = "lakehouse.run-id"
REPORT_KEY = "lakehouse.report"

# A replace whose keys hold no rows yet is an expected outcome, not news. One process-wide filter
# for exactly that message: catch_warnings would swap the global filters under concurrent commits.
warnings.filterwarnings("ignore", "Delete operation did not match any records", UserWarning)

Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset


class StaleCommitError(RuntimeError):
    """Another run committed first: this run's view of the table is stale. Nothing was committed."""


class OffsetsMovedError(StaleCommitError):
    """The bronze offsets moved since the batch was planned."""


def latest_property(table: Table, key: str) -> str | None:
    """The value of ``key`` in the newest snapshot summary that has it (maintenance snapshots don't)."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        value = summary.additional_properties.get(key) if summary is not None else None
        if value is not None:
            return value
        if snapshot.parent_snapshot_id is None:
            break
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)
    return None


def latest_offsets(table: Table) -> Offsets:
    """The Kafka offsets recorded by the newest bronze commit."""
    raw = latest_property(table, OFFSETS_KEY)
    return decode_offsets(raw) if raw is not None else {}


def upstream_key(upstream: str) -> str:
    return f"lakehouse.upstream.{upstream}"


def upstream_snapshot(table: Table, upstream: str) -> int | None:
    """The last snapshot of ``upstream`` (a table name) that was promoted into ``table``."""
    raw = latest_property(table, upstream_key(upstream))
    return int(raw) if raw is not None else None


def snapshot_at_watermark(table: Table, upstream: str, watermark: int) -> int | None:
    """The newest snapshot of ``table`` whose promotion reached ``upstream``'s snapshot
    ``watermark`` and went no further (maintenance snapshots after it keep its data); None if no
    snapshot in the current lineage has that watermark."""
    key = upstream_key(upstream)
    found: int | None = None  # a maintenance snapshot above the promotion that has the watermark
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        value = summary.additional_properties.get(key) if summary is not None else None
        if value is None:
            found = snapshot.snapshot_id if found is None else found
        elif int(value) == watermark:
            return found if found is not None else snapshot.snapshot_id
        else:
            found = None
        if snapshot.parent_snapshot_id is None:
            break
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)
    return None


def encode_offsets(offsets: Mapping[str, Mapping[int, int]]) -> str:
    return json.dumps({t: {str(p): o for p, o in sorted(ps.items())} for t, ps in sorted(offsets.items())})


def decode_offsets(raw: str) -> Offsets:
    return {t: {int(p): int(o) for p, o in ps.items()} for t, ps in json.loads(raw).items()}


def keys_on_days(key: str, values: Sequence, time_column: str, days: Iterable[date]) -> BooleanExpression:
    """``key`` in ``values``, and ``time_column`` on one of ``days`` (UTC): the delete filter of a
    replace in a table partitioned by day(``time_column``), so pyiceberg plans only those days'
    files instead of every file of the table."""
    if not values:
        raise ValueError(f"no {key} values to delete")
    ranges = [
        And(GreaterThanOrEqual(time_column, _micros(day)), LessThan(time_column, _micros(day + timedelta(days=1))))
        for day in sorted(set(days))
    ]
    if not ranges:
        raise ValueError(f"no days to bound the delete of {len(values)} {key} values")
    return And(In(key, list(values)), Or(*ranges) if len(ranges) > 1 else ranges[0])


def replace_filter(rows: pa.Table, key: str, values: Sequence, time_column: str) -> BooleanExpression:
    """The stored rows that ``rows`` replace by ``key``, on the days their ``time_column`` falls
    on: a copy carries the same body, so the same time and partition, and the delete plans those
    days' files rather than all of the table. A replacing row without a time falls back to ``key``
    alone."""
    import pyarrow.compute as pc

    replacing = rows.filter(pc.is_in(rows.column(key), value_set=pa.array(list(values), rows.schema.field(key).type)))
    times = replacing.column(time_column)
    if times.null_count or not replacing.num_rows:
        return In(key, list(values))
    days = pc.cast(pc.cast(times, pa.timestamp("us", "UTC")), pa.date32()).to_pylist()
    return keys_on_days(key, values, time_column, days)


def _micros(day: date) -> int:
    """Microseconds since the epoch at ``day``'s UTC midnight: Iceberg's timestamp literal."""
    return (day - date(1970, 1, 1)).days * 86_400_000_000


def conform(rows: pa.Table, table: Table) -> pa.Table:
    """``rows`` in the table's column order and types; optional columns it lacks become nulls."""
    target = table.schema().as_arrow()
    columns = []
    for field in target:
        if field.name in rows.column_names:
            columns.append(rows.column(field.name).cast(field.type))
        elif field.nullable:
            columns.append(pa.nulls(rows.num_rows, field.type))
        else:
            raise ValueError(f"{table.name()}: required column {field.name!r} is missing")
    return pa.Table.from_arrays(columns, schema=target)


def commit_rows(
    table: Table,
    rows: pa.Table,
    summary: Mapping[str, str],
    still_current: Callable[[Table], bool],
    delete_filter: BooleanExpression | None = None,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> int:
    """Append ``rows`` (after deleting ``delete_filter``) in one atomic commit; returns the snapshot id.

    ``still_current(table)`` re-checks, on fresh metadata, that nobody committed since this run
    planned; the catalog's snapshot requirement catches a race after that check. The table must
    have ``commit.retry.num-retries=0``: an automatic retry would re-apply the rows on top of the
    other run's commit and duplicate them. An empty ``rows`` still commits, to move the bookkeeping.
    """
    transaction = _checked_transaction(table, still_current)
    with naming_full_store(table):
        if delete_filter is not None:
            transaction.delete(delete_filter, snapshot_properties=dict(summary))
        transaction.append(rows, snapshot_properties=dict(summary))
        on_stage("files-written")
        return _commit(transaction, table.name(), on_stage)


def commit_files(
    table: Table,
    data_files: Sequence[DataFile],
    summary: Mapping[str, str],
    still_current: Callable[[Table], bool],
    on_stage: Callable[[str], None] = lambda stage: None,
) -> int:
    """Like ``commit_rows`` for data files already written (by the ingest writers): one fast append."""
    transaction = _checked_transaction(table, still_current)
    with naming_full_store(table):
        with transaction.update_snapshot(snapshot_properties=dict(summary)).fast_append() as append:
            for data_file in data_files:
                append.append_data_file(data_file)
        on_stage("files-written")
        return _commit(transaction, table.name(), on_stage)


# errno values of a store that is full (disk, quota, file size limit)
_STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextmanager
def naming_full_store(table: Table) -> Iterator[None]:
    """A full store while writing a commit's data, manifest or metadata files: Arrow's error
    names no file ("Error writing bytes to file"), so say which table and where. The errno stays:
    such an error is permanent (tasks.orchestration.is_transient), and nothing was committed."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _STORAGE_FULL or exc.filename:
            raise
        raise OSError(exc.errno, f"{os.strerror(exc.errno)} (writing the files of a commit to {'.'.join(table.name())}; "
                                 "nothing was committed)", table.location()) from exc


def _checked_transaction(table: Table, still_current: Callable[[Table], bool]) -> Transaction:
    table = table.refresh()
    if not still_current(table):
        raise StaleCommitError(f"{table.name()}: another run committed since this one planned; nothing committed")
    if table.metadata.properties.get("commit.retry.num-retries") != "0":
        raise RuntimeError(f"{table.name()} must have commit.retry.num-retries=0 for exactly-once commits")
    return table.transaction()


def _commit(transaction: Transaction, name: str, on_stage: Callable[[str], None]) -> int:
    try:
        committed = transaction.commit_transaction()
    except CommitFailedException as exc:
        raise StaleCommitError(f"{name}: a concurrent commit won ({exc}); nothing committed") from exc
    on_stage("committed")
    snapshot = committed.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def append_with_offsets(
    table: Table,
    rows: pa.Table,
    expected: Offsets,
    next_offsets: Offsets,
    run_id: str,
    report: Mapping[str, object],
    on_stage: Callable[[str], None] = lambda stage: None,
    extra: Mapping[str, str] | None = None,
) -> int:
    """Append bronze rows in one snapshot that records ``next_offsets`` (and ``extra`` summary
    properties); refuse if offsets moved."""
    return _commit_with_offsets(
        lambda summary, current: commit_rows(table, rows, summary, current, on_stage=on_stage),
        expected, next_offsets, run_id, report, extra,
    )


def append_files_with_offsets(
    table: Table,
    data_files: Sequence[DataFile],
    expected: Offsets,
    next_offsets: Offsets,
    run_id: str,
    report: Mapping[str, object],
    on_stage: Callable[[str], None] = lambda stage: None,
) -> int:
    """``append_with_offsets`` for bronze files the ingest writers already wrote."""
    return _commit_with_offsets(
        lambda summary, current: commit_files(table, data_files, summary, current, on_stage=on_stage),
        expected, next_offsets, run_id, report,
    )


def _commit_with_offsets(
    commit: Callable[[Mapping[str, str], Callable[[Table], bool]], int],
    expected: Offsets,
    next_offsets: Offsets,
    run_id: str,
    report: Mapping[str, object],
    extra: Mapping[str, str] | None = None,
) -> int:
    summary = {**_offsets_summary(next_offsets, run_id, report), **(extra or {})}
    try:
        return commit(summary, lambda t: latest_offsets(t) == expected)
    except StaleCommitError as exc:
        raise OffsetsMovedError(str(exc)) from exc


def _offsets_summary(next_offsets: Offsets, run_id: str, report: Mapping[str, object]) -> dict[str, str]:
    return {
        OFFSETS_KEY: encode_offsets(next_offsets),
        RUN_ID_KEY: run_id,
        REPORT_KEY: json.dumps(report, sort_keys=True, default=str),
    }
