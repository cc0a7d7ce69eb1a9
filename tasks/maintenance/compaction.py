"""Compaction: rewrite each partition's small data files into files of about the target size.

:func:`plan_compaction` is pure: from the live data files it picks, per partition, the files below
the small-file floor, packs them into groups of at most the target size (first fit, largest first)
and leaves out partitions with a file committed inside the freshness window, where streaming
appends still land. :func:`compact_table` executes the plan:

1. every group is read (pyiceberg's ArrowScan: schema evolution by field id) and written as one new
   file, on the Ray head when one is configured; the new files are read back and their row
   checksum must equal the sources' (rows, order-independent digest) or nothing is committed;
2. each partition is committed as one atomic replace (an overwrite snapshot deleting the sources
   and adding the new files), built on freshly loaded metadata under the table's lock. Tables have
   ``commit.retry.num-retries=0``: when a concurrent commit wins, or a source file is no longer
   live, the commit fails as a whole, the partition is re-planned on the new metadata and retried,
   so a concurrent append is never lost nor duplicated. Files written for a failed attempt are
   deleted, unless the re-plan is unchanged and they are reused.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterable

from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import load_file_io
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata

from tasks.maintenance.checksum import EMPTY, RowChecksum, row_checksum
from tasks.maintenance.inventory import LiveFile, TableFiles, live_files
from tasks.settings import Settings

log = logging.getLogger(__name__)

MAINTENANCE_KEY = "lakehouse.maintenance.operation"
_UNBOUNDED = str(2**62)  # writer target: one output file per group (the plan bounds the group)

Lock = Callable[[str], ContextManager[object]]
Stage = Callable[[str, tuple], None]


def no_lock(identifier: str) -> ContextManager[object]:
    return contextlib.nullcontext()


# ---- the pure planner ----------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionRewrite:
    spec_id: int
    partition: tuple
    groups: tuple[tuple[str, ...], ...]  # each group of source paths becomes one new file
    source_bytes: int

    @property
    def key(self) -> tuple[int, tuple]:
        return (self.spec_id, self.partition)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(p for g in self.groups for p in g)


@dataclass(frozen=True)
class CompactionPlan:
    rewrites: tuple[PartitionRewrite, ...]
    fresh: tuple[tuple[int, tuple], ...]  # partitions left alone: a file committed inside the window


def pack(sizes: Iterable[tuple[str, int]], capacity: int) -> list[list[str]]:
    """First-fit decreasing: groups of paths whose sizes sum to at most ``capacity`` (a file
    larger than ``capacity`` gets a group of its own). Deterministic: ties break on the path."""
    bins: list[tuple[int, list[str]]] = []
    for path, size in sorted(sizes, key=lambda ps: (-ps[1], ps[0])):
        for i, (used, members) in enumerate(bins):
            if used + size <= capacity:
                bins[i] = (used + size, members + [path])
                break
        else:
            bins.append((size, [path]))
    return [members for _, members in bins]


def plan_compaction(
    files: Iterable[LiveFile],
    *,
    now_ms: int,
    target_bytes: int,
    small_bytes: int,
    freshness_ms: int,
    min_files: int = 2,
    spec_id: int | None = None,
) -> CompactionPlan:
    """Which files to rewrite, per partition, into which groups.

    - only files of partition spec ``spec_id`` (the table's current spec; others can't be
      rewritten into the same partition) when given;
    - a partition whose newest file was committed after ``now_ms - freshness_ms`` is fresh: skipped;
    - files of at least ``small_bytes`` are left as they are;
    - a partition needs at least ``min_files`` small files; they are packed into groups of at most
      ``target_bytes``, and a group of one file is dropped (rewriting it gains nothing).
    """
    by_partition: dict[tuple[int, tuple], list[LiveFile]] = {}
    for f in files:
        if spec_id is None or f.spec_id == spec_id:
            by_partition.setdefault((f.spec_id, f.partition), []).append(f)
    rewrites, fresh = [], []
    for key in sorted(by_partition, key=repr):
        members = by_partition[key]
        if max(f.added_ms for f in members) > now_ms - freshness_ms:
            fresh.append(key)
            continue
        small = [f for f in members if f.size_bytes < small_bytes]
        if len(small) < min_files:
            continue
        sizes = {f.path: f.size_bytes for f in small}
        groups = tuple(tuple(g) for g in pack(sizes.items(), target_bytes) if len(g) > 1)
        if groups:
            rewrites.append(PartitionRewrite(key[0], key[1], groups, sum(sizes[p] for g in groups for p in g)))
    return CompactionPlan(tuple(rewrites), tuple(fresh))


# ---- rewriting one group (runs on Ray when configured) ---------------------------------------


@dataclass(frozen=True)
class RewriteJob:
    metadata: TableMetadata
    io_properties: dict[str, str]
    sources: tuple[DataFile, ...]


@dataclass(frozen=True)
class RewriteResult:
    written: tuple[DataFile, ...]
    source: RowChecksum
    output: RowChecksum  # read back from the written files
    source_bytes: int
    written_bytes: int


def _read(metadata: TableMetadata, io, files: Iterable[DataFile]):
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.table import FileScanTask

    return ArrowScan(metadata, io, metadata.schema(), AlwaysTrue()).to_table([FileScanTask(f) for f in files])


def rewrite_group(job: RewriteJob) -> RewriteResult:
    """Read the sources, write them as one new file, read it back; checksums of both sides."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    io = load_file_io(job.io_properties, job.metadata.location)
    sources = job.sources
    rows = _read(job.metadata, io, sources)
    source = row_checksum(rows)
    written: list[DataFile] = []
    try:
        if rows.num_rows:
            props = {**job.metadata.properties, "write.target-file-size-bytes": _UNBOUNDED}
            metadata = job.metadata.model_copy(update={"properties": props})
            written = list(_dataframe_to_data_files(table_metadata=metadata, df=rows, io=io))
            for f in written:  # the writer doesn't set it (it's not stored in the file)
                f.spec_id = job.metadata.default_spec_id
        output = row_checksum(_read(job.metadata, io, written)) if written else EMPTY
    except BaseException:
        for f in written:
            with contextlib.suppress(Exception):
                io.delete(f.file_path)
        raise
    return RewriteResult(
        written=tuple(written), source=source, output=output,
        source_bytes=sum(f.file_size_in_bytes for f in sources),
        written_bytes=sum(f.file_size_in_bytes for f in written),
    )


def _run_jobs(jobs: list[RewriteJob], settings: Settings) -> list[RewriteResult]:
    if not jobs:
        return []
    if settings.ray_address:  # the stack: the Ray head does the heavy reading and writing
        from tasks.compute import map_on_ray, use_ray

        use_ray(settings)
        return map_on_ray(rewrite_group, jobs, num_cpus=1)  # one bin in memory per CPU
    return [rewrite_group(job) for job in jobs]


def _discard(table: Table, results: Iterable[RewriteResult] | None) -> None:
    for result in results or ():
        for f in result.written:
            try:
                table.io.delete(f.file_path)
            except Exception:  # noqa: BLE001 - at worst an orphan, removed later
                log.warning("could not delete %s; orphan removal will", f.file_path)


# ---- executing the plan ------------------------------------------------------------------------


def _stats(files: TableFiles) -> dict[str, int]:
    count = len(files.live)
    size = sum(f.size_bytes for f in files.live)
    return {"files": count, "bytes": size, "rows": sum(f.record_count for f in files.live),
            "avg_file_bytes": size // count if count else 0}


def partition_label(table: Table, spec_id: int, partition: tuple) -> str:
    try:
        from pyiceberg.typedef import Record

        spec = table.metadata.specs()[spec_id]
        return spec.partition_to_path(Record(*partition), table.schema()) if spec.fields else "(unpartitioned)"
    except Exception:  # noqa: BLE001 - a label only
        return repr(partition)


def _options(settings: Settings, table: Table, now_ms: int) -> dict:
    return dict(now_ms=now_ms, target_bytes=settings.maintenance_target_file_bytes,
                small_bytes=settings.maintenance_small_file_bytes,
                freshness_ms=int(settings.maintenance_freshness_hours * 3_600_000),
                min_files=settings.maintenance_min_input_files, spec_id=table.metadata.default_spec_id)


class CompactionValidationError(RuntimeError):
    """The rewritten files do not hold exactly the source rows; nothing was committed."""


def _validate(table: Table, rewrite: PartitionRewrite, results: list[RewriteResult]) -> None:
    for group, result in zip(rewrite.groups, results):
        if result.source != result.output:
            _discard(table, results)
            raise CompactionValidationError(
                f"{table.name()}: rewrite of {len(group)} files changed the rows "
                f"({result.source} -> {result.output}); nothing committed")


def _commit_partition(table: Table, settings: Settings, rewrite: PartitionRewrite,
                      results: list[RewriteResult] | None, *, now_ms: int, lock: Lock, on_stage: Stage) -> dict:
    identifier = ".".join(table.name())
    label = partition_label(table, rewrite.spec_id, rewrite.partition)
    outcome = {"partition": label, "status": "failed", "conflicts": 0, "replans": 0}
    for _attempt in range(settings.maintenance_commit_attempts):
        if results is None:
            state = live_files(table)
            results = _run_jobs([RewriteJob(table.metadata, dict(table.io.properties),
                                             tuple(state.data_files[p] for p in g)) for g in rewrite.groups], settings)
        _validate(table, rewrite, results)
        on_stage("files-written", rewrite.key)
        with lock(identifier):
            table = table.refresh()
            state = live_files(table)
            mine = [f for f in state.live if (f.spec_id, f.partition) == rewrite.key]
            replanned = plan_compaction(mine, **_options(settings, table, now_ms)).rewrites
            if not replanned:
                _discard(table, results)
                outcome["status"] = "skipped: no longer eligible"
                return outcome
            if replanned[0].groups != rewrite.groups:  # the partition changed: write again
                _discard(table, results)
                rewrite, results = replanned[0], None
                outcome["replans"] += 1
                continue
            new_files = [f for r in results for f in r.written]
            summary = {MAINTENANCE_KEY: "compaction", "lakehouse.maintenance.partition": label}
            transaction = table.transaction()
            try:
                with transaction.update_snapshot(snapshot_properties=summary).overwrite() as replace:
                    for path in rewrite.sources:
                        replace.delete_data_file(state.data_files[path])
                    for f in new_files:
                        replace.append_data_file(f)
                on_stage("commit-staged", rewrite.key)
                committed = transaction.commit_transaction()
            except (CommitFailedException, ValidationException) as exc:
                # Nothing landed: re-plan on the new metadata. The written files are kept for
                # the next attempt only if the re-plan is the same.
                log.info("%s %s: concurrent commit (%s); re-planning", identifier, label, exc)
                outcome["conflicts"] += 1
                continue
        on_stage("committed", rewrite.key)
        snapshot = committed.current_snapshot()
        outcome.update(
            status="committed", snapshot_id=snapshot.snapshot_id if snapshot else None,
            files_before=len(rewrite.sources), files_after=len(new_files),
            bytes_before=sum(r.source_bytes for r in results), bytes_after=sum(r.written_bytes for r in results),
            rows=sum(r.source.rows for r in results),
            checksum=f"{sum(r.source.digest for r in results) % 2**64:016x}",
        )
        return outcome
    _discard(table, results)
    return outcome


def compact_table(
    table: Table,
    settings: Settings,
    *,
    dry_run: bool = False,
    now_ms: int | None = None,
    lock: Lock = no_lock,
    on_stage: Stage = lambda stage, partition: None,
) -> dict:
    """Compact the table's old partitions; returns a report (the plan only, when ``dry_run``).

    ``lock(identifier)`` is held around each commit (the flow passes tasks.orchestration.table_lock
    bound to its settings).
    ``on_stage(stage, (spec_id, partition))`` is called at "files-written" (new files validated,
    before the commit is built), "commit-staged" (just before the catalog commit) and "committed"
    (the partition's replace committed, its lock released): test hooks.
    """
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    table = table.refresh()
    before = live_files(table)
    report: dict = {"dry_run": dry_run, "before": _stats(before)}
    if before.has_delete_files:
        report.update(skipped="the table has delete files (merge-on-read); not compacted",
                      plan=[], after=report["before"], partitions=[])
        return report
    plan = plan_compaction(before.live, **_options(settings, table, now_ms))
    report["plan"] = [
        {"partition": partition_label(table, r.spec_id, r.partition), "files": len(r.sources),
         "bytes": r.source_bytes, "new_files": len(r.groups), "sources": list(r.sources)}
        for r in plan.rewrites
    ]
    report["fresh_partitions"] = [partition_label(table, s, p) for s, p in plan.fresh]
    if dry_run or not plan.rewrites:
        report.update(after=report["before"], partitions=[])
        return report
    jobs = [RewriteJob(table.metadata, dict(table.io.properties), tuple(before.data_files[p] for p in g))
            for r in plan.rewrites for g in r.groups]
    results = _run_jobs(jobs, settings)
    partitions, start = [], 0
    try:
        for rewrite in plan.rewrites:
            mine = results[start:start + len(rewrite.groups)]
            start += len(rewrite.groups)
            partitions.append(_commit_partition(table, settings, rewrite, mine, now_ms=now_ms, lock=lock,
                                                on_stage=on_stage))
    except (CompactionValidationError, CommitFailedException, ValidationException):
        _discard(table, results[start:])  # written for partitions not reached; never committed
        raise
    report["partitions"] = partitions
    report["after"] = _stats(live_files(table.refresh()))
    report["committed"] = sum(p["status"] == "committed" for p in partitions)
    return report

