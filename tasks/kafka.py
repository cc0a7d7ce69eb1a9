"""Kafka access: topic administration, watermarks, the per-partition micro-batch reader."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Iterator

from confluent_kafka.admin import AdminClient, NewTopic

from tasks.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from confluent_kafka import Consumer


class ClientLog:
    """Where librdkafka's own log lines go (the ``logger`` setting of every client we build)
    instead of straight to stderr, where they cut into a command's output (``%4|…|GETPID|…``):
    the Prefect run's logger inside a flow or task run, else the ``lakehouse.kafka`` logger, at
    DEBUG below ERROR, since librdkafka retries what it warns about and the client's API reports
    what finally fails. The client hands them over when polled."""

    def log(self, level: int, message: str, *args) -> None:
        logger = _run_logger()
        if logger is not None:
            logger.log(level, message, *args)
        else:
            logging.getLogger("lakehouse.kafka").log(level if level >= logging.ERROR else logging.DEBUG, message, *args)


def _run_logger():
    """The current Prefect run's logger, or None outside a run (a Ray actor never imports Prefect)."""
    context = sys.modules.get("prefect.context")
    if context is None or (context.FlowRunContext.get() is None and context.TaskRunContext.get() is None):
        return None
    from prefect import get_run_logger

    return get_run_logger()


CLIENT_LOG = ClientLog()


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 5000, "logger": CLIENT_LOG})


def ensure_topic(settings: Settings, topic: str | None = None, partitions: int | None = None) -> list[str]:
    """Create the topic if it is missing; returns ``[topic]`` when it was created, else ``[]``."""
    topic = topic or settings.kafka_topic
    admin = admin_client(settings)
    if topic in admin.list_topics(timeout=10).topics:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=partitions or settings.kafka_partitions,
                replication_factor=1,
                # the contract allows values of several MB
                config={"max.message.bytes": str(16 * 1024 * 1024)},
            )
        ]
    )
    try:
        futures[topic].result(timeout=30)
    except Exception as exc:  # a concurrent creator may have won
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
        return []
    return [topic]


# ---- the micro-batch reader ---------------------------------------------------------------------

def consumer_config(bootstrap: str, group: str | None = None) -> dict:
    """Consumer settings for reading by explicit assignment: no auto-commit, room for multi-MB values."""
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group or "lakehouse-reader",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 16384,  # prefetch per consumer: part of a writer actor's memory
        "log_level": 3,
        "logger": CLIENT_LOG,
    }
    return config


@dataclass(frozen=True)
class PartitionRange:
    """What one reader task must read: [start, end) of one partition, within limits."""

    topic: str
    partition: int
    start: int
    end: int
    max_records: int
    max_bytes: int
    deadline: float  # time.time() after which the reader stops


def watermarks(settings: Settings, topic: str) -> dict[int, tuple[int, int]]:
    """Low and high watermark of every partition of ``topic``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(consumer_config(settings.kafka_bootstrap))
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise LookupError(f"topic {topic!r} does not exist on {settings.kafka_bootstrap}")
        out = {}
        for partition in sorted(metadata.topics[topic].partitions):
            out[partition] = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return out
    finally:
        consumer.close()


@dataclass
class ReadProgress:
    """Where a reader stands: one past the last record read, and what it read so far."""

    next_offset: int
    records: int = 0
    bytes: int = 0


def read_chunks(
    wanted: PartitionRange,
    bootstrap: str,
    ingested_at: "datetime",
    run_id: str,
    progress: ReadProgress,
    chunk_bytes: int = 32 * 1024 * 1024,
    consumer_factory: "Callable[[], Consumer] | None" = None,
) -> Iterator["pa.Table"]:
    """Read one partition range as bronze rows, yielded in chunks of about ``chunk_bytes``.

    Stops at ``end`` (the high watermark when the batch was planned), the record or byte limit,
    or the deadline, whichever comes first. ``progress`` is updated as records are read: after the
    last chunk, ``progress.next_offset`` is one past the last row, or ``end`` when the range was
    read to its end (a range may end in a gap: a transaction marker, aborted or compacted records).
    It never passes ``end``: records after it, even prefetched ones, belong to the next batch. Holding one chunk at a
    time keeps a reader's memory bounded by the chunk, not by the batch.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from tasks.transforms.bronze import RecordColumns, records_to_arrow

    columns = RecordColumns()
    chunk_size = 0
    consumer = consumer_factory() if consumer_factory is not None else Consumer(consumer_config(bootstrap))
    try:
        consumer.assign([TopicPartition(wanted.topic, wanted.partition, wanted.start)])
        while (progress.next_offset < wanted.end and progress.records < wanted.max_records
               and progress.bytes < wanted.max_bytes):
            if time.time() >= wanted.deadline:
                break
            if chunk_size >= chunk_bytes:
                yield records_to_arrow(wanted.topic, wanted.partition, columns, ingested_at, run_id)
                columns, chunk_size = RecordColumns(), 0
            want = min(10_000, wanted.max_records - progress.records)
            messages = consumer.consume(num_messages=want, timeout=0.5)
            for message in messages:
                if message.error() is not None:
                    raise KafkaException(message.error())
                offset = message.offset()
                if offset >= wanted.end:
                    # Delivered in order: every offset below the end not seen was a gap Kafka skipped.
                    # Records past the end (prefetched) belong to the next batch: never move past it.
                    progress.next_offset = wanted.end
                    break
                key, value = message.key(), message.value()
                size = (len(key) if key else 0) + (len(value) if value else 0)
                chunk_size += size
                columns.offsets.append(offset)
                columns.timestamps_ms.append(message.timestamp()[1])
                columns.keys.append(key)
                columns.values.append(value)
                columns.headers.append(message.headers())
                progress.next_offset = offset + 1
                progress.records += 1
                progress.bytes += size
                if progress.bytes >= wanted.max_bytes or progress.records >= wanted.max_records:
                    break
            if not messages:
                # Nothing arrived: the range may end in a gap (aborted transactions, compaction).
                position = consumer.position([TopicPartition(wanted.topic, wanted.partition)])[0].offset
                if position >= wanted.end:
                    progress.next_offset = wanted.end  # the position may be past later records' offsets
                    break
    finally:
        consumer.close()
    if len(columns):
        yield records_to_arrow(wanted.topic, wanted.partition, columns, ingested_at, run_id)


def commit_group_offsets(settings: Settings, topic: str, next_offsets: dict[int, int]) -> None:
    """Commit the consumer group's offsets. Only for lag monitoring: bronze holds the truth."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(consumer_config(settings.kafka_bootstrap, settings.kafka_consumer_group))
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in sorted(next_offsets.items())], asynchronous=False
        )
    finally:
        consumer.close()
