"""Kafka partition ranges into bronze data files, on warm, long-lived Ray actors.

Why actors: a Ray worker belongs to one job, so every ingest process would otherwise pay ~3 s of
worker start and imports (confluent-kafka, pyarrow, pyiceberg) before it read one record.
Detached, named actors in the ``lakehouse`` namespace stay warm between runs. Their names carry
a hash of the code they run, so new code gets new actors and the old ones are retired. An
actor that has been idle for ``idle_seconds`` exits on its own, which frees its memory.

Why files, not rows: each actor writes its range as Parquet data files in the table's location
and returns only their metadata. The bytes never travel through the object store or the driver,
the driver's memory stays flat, and more Ray nodes mean more readers and writers. The driver
commits every range's files in one Iceberg snapshot (``tasks.commits.append_files_with_offsets``);
files of a batch that never commits are orphans, which maintenance removes.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.kafka import PartitionRange, ReadProgress, read_chunks

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table.metadata import TableMetadata

NAMESPACE = "lakehouse"
NAME_PREFIX = "bronze-writer-"


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
        # a write uuid per chunk: file names stay unique across chunks and actors
        out = list(_dataframe_to_data_files(table_metadata, chunk, io, write_uuid=uuid.uuid4()))
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


def release_memory() -> None:
    """Give freed Arrow and malloc memory back to the OS, so an idle actor stays small."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps it, which is only wasteful
        pass


class BronzeWriter:
    """A Ray actor that runs ``write_partition_range`` and retires after ``idle_seconds`` unused."""

    def __init__(self, idle_seconds: float):
        self._idle_seconds = idle_seconds
        self._last_used = time.monotonic()
        threading.Thread(target=self._watch_idle, daemon=True).start()

    def write(self, *args) -> WrittenRange:
        try:
            return write_partition_range(*args)
        finally:
            release_memory()
            self._last_used = time.monotonic()

    def retire_if_idle(self) -> None:
        """Runs between calls (one at a time per actor), so it never cuts a write short."""
        import ray

        if time.monotonic() - self._last_used >= self._idle_seconds:
            ray.actor.exit_actor()  # an intended exit: Ray frees the name for the next run's actor

    def _watch_idle(self) -> None:
        import ray

        me = ray.get_runtime_context().current_actor
        while True:
            time.sleep(min(30.0, self._idle_seconds))
            if time.monotonic() - self._last_used >= self._idle_seconds:
                me.retire_if_idle.remote()


def code_version() -> str:
    """A hash of the code an actor runs: actors of other code are never used."""
    import pyarrow
    import pyiceberg

    from tasks import kafka
    from tasks.transforms import bronze

    digest = hashlib.sha256(f"{pyiceberg.__version__} {pyarrow.__version__}".encode())
    for module_file in (__file__, kafka.__file__, bronze.__file__):
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()[:12]


def writer_pool(slots: int, idle_seconds: float) -> list:
    """``slots`` warm writer actors of this code version, created on first use; stale ones retired."""
    import ray

    version = code_version()
    _retire_stale_writers(version)
    actor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1)(BronzeWriter)
    return [
        # SPREAD: with no CPUs reserved, the writers would otherwise pack onto one node
        actor.options(name=f"{NAME_PREFIX}{version}-{slot}", namespace=NAMESPACE, lifetime="detached",
                      get_if_exists=True, scheduling_strategy="SPREAD").remote(idle_seconds)
        for slot in range(slots)
    ]


def _retire_stale_writers(version: str) -> None:
    import ray

    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = entry["name"], entry["namespace"]
        if namespace == NAMESPACE and name.startswith(NAME_PREFIX) and not name.startswith(NAME_PREFIX + version):
            try:
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            except ValueError:  # gone already
                pass


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
