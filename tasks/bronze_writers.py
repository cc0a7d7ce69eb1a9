"""Kafka partition ranges into bronze data files, on warm, long-lived Ray actors.

Why actors: a Ray worker belongs to one job, so every ingest process would otherwise pay ~3 s of
worker start and imports (confluent-kafka, pyarrow, pyiceberg) before it read one record. The
writers are ``tasks.warm_actors``: detached, named by code version, retired when idle.

Why files, not rows: each actor writes its range as Parquet data files in the table's location
and returns only their metadata. The bytes never travel through the object store or the driver,
the driver's memory stays flat, and more Ray nodes mean more readers and writers. The driver
commits every range's files in one Iceberg snapshot (``tasks.commits.append_files_with_offsets``);
files of a batch that never commits are orphans, which maintenance removes.
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from tasks import warm_actors
from tasks.kafka import PartitionRange, ReadProgress, read_chunks
from tasks.warm_actors import NAMESPACE, WarmActor

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table.metadata import TableMetadata

NAME_PREFIX = "bronze-writer-"
# errno values of a store that is full (disk, quota, file size limit): not transient, and the
# operator needs to know where
_STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class WrittenRange:
    """One partition range, read and written: where it ended and the files that hold it."""

    topic: str
    partition: int
    start: int
    next_offset: int
    records: int
    bytes: int
    data_files: list["DataFile"]
    read_seconds: float = 0.0  # Kafka to Arrow, until the last chunk was read
    write_seconds: float = 0.0  # Arrow to Parquet files in the table's location (overlaps the reading)


def write_partition_range(
    wanted: PartitionRange,
    bootstrap: str,
    ingested_at: datetime,
    run_id: str,
    table_metadata: "TableMetadata",
    io_properties: dict[str, str],
    chunk_bytes: int = 32 * 1024 * 1024,
) -> WrittenRange:
    """Read one partition range and write it as data files of the table, uncommitted.

    Each chunk of about ``chunk_bytes`` is written as soon as it is read, so memory is bounded by
    two chunks, whatever the batch size.
    """
    from pyiceberg.io import load_file_io
    from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files

    io = load_file_io(io_properties, table_metadata.location)
    progress = ReadProgress(wanted.start)
    files: list = []
    write_seconds = 0.0

    def write(chunk) -> list:
        nonlocal write_seconds
        began = time.perf_counter()
        _check_pyarrow_schema_compatible(
            table_metadata.schema(), provided_schema=chunk.schema, format_version=table_metadata.format_version
        )
        try:
            # a write uuid per chunk: file names stay unique across chunks and actors
            out = list(_dataframe_to_data_files(table_metadata, chunk, io, write_uuid=uuid.uuid4()))
        except OSError as exc:
            if exc.errno not in _STORAGE_FULL:
                raise
            # Arrow's message names no file ("Error writing bytes to file"): say where, for the operator
            where = f"{table_metadata.location.rstrip('/')}/data"
            raise OSError(exc.errno, f"{os.strerror(exc.errno)} (writing bronze data files of {wanted.topic} "
                                     f"partition {wanted.partition})", where) from exc
        write_seconds += time.perf_counter() - began
        return out

    # One chunk is written (Parquet encoding and upload release the GIL) while the next is read:
    # at most two chunks in memory.
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bronze-write") as writer:
        pending = None
        for chunk in read_chunks(wanted, bootstrap, ingested_at, run_id, progress, chunk_bytes):
            if pending is not None:
                files += pending.result()
            pending = writer.submit(write, chunk)
            del chunk
        read_seconds = time.perf_counter() - began
        if pending is not None:
            files += pending.result()
    return WrittenRange(wanted.topic, wanted.partition, wanted.start, progress.next_offset, progress.records,
                        progress.bytes, files, round(read_seconds, 3), round(write_seconds, 3))


class BronzeWriter(WarmActor):
    """A warm Ray actor that runs ``write_partition_range``."""

    def write(self, *args) -> WrittenRange:
        try:
            return write_partition_range(*args)
        finally:
            self.used()


def code_version() -> str:
    from tasks import kafka
    from tasks.transforms import bronze

    return warm_actors.code_version([__file__, kafka.__file__, bronze.__file__], ["pyiceberg", "pyarrow"])


def writer_pool(slots: int, idle_seconds: float) -> list:
    """``slots`` warm writer actors of this code version, created on first use; stale ones retired."""
    version = code_version()
    warm_actors.retire_stale(NAME_PREFIX, keep=f"{NAME_PREFIX}{version}")
    # SPREAD: with no CPUs reserved, the writers would otherwise pack onto one node
    return [warm_actors.warm_actor(BronzeWriter, f"{NAME_PREFIX}{version}-{slot}", idle_seconds,
                                   scheduling_strategy="SPREAD")
            for slot in range(slots)]


def write_ranges(
    ranges: list[PartitionRange],
    bootstrap: str,
    ingested_at: datetime,
    run_id: str,
    table_metadata: "TableMetadata",
    io_properties: dict[str, str],
    slots: int,
    idle_seconds: float,
    chunk_bytes: int = 32 * 1024 * 1024,
) -> list[WrittenRange]:
    """Every range on the writer pool at once (round robin), results in range order.

    An actor that exited on idle just as it was handed work is replaced once.
    """
    import ray
    from ray.exceptions import RayActorError

    if not ranges:
        return []
    shared = [ray.put(x) for x in (bootstrap, ingested_at, run_id, table_metadata, io_properties, chunk_bytes)]
    for attempt in (1, 2):
        pool = writer_pool(min(slots, len(ranges)), idle_seconds)
        try:
            return ray.get([pool[i % len(pool)].write.remote(r, *shared) for i, r in enumerate(ranges)])
        except RayActorError:
            if attempt == 2:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")
