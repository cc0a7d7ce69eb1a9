"""The Kafka cross-check of bronze's gaps: reads each unexplained gap back from the broker to tell its
own gaps (transaction markers, aborted transactions, compaction) from records bronze lost."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tasks.settings import Settings
from tasks.verify.reading import Key, plural
from tasks.verify.report import EXAMPLES

_PENDING, _CONFIRMED, _LOST, _GONE = 0, 1, 2, 3
LOST_EXAMPLES = 100  # lost records kept by coordinates in a probe's result (all are counted)


@dataclass
class GapProbeResult:
    """What Kafka said about bronze's unexplained gaps. ``unconfirmable``: reason -> (gaps, offsets)."""

    gaps: int = 0
    confirmed_gaps: int = 0
    confirmed_offsets: int = 0
    lost_gaps: int = 0
    lost_records: int = 0
    lost: list[tuple[str, int, int]] = field(default_factory=list)  # (topic, partition, offset), the first ones
    unconfirmable: dict[str, list[int]] = field(default_factory=dict)
    unprobed_gaps: int = 0
    unprobed_offsets: int = 0
    bound: str | None = None  # what cut the probe short

    @property
    def unconfirmable_gaps(self) -> int:
        return sum(gaps for gaps, _ in self.unconfirmable.values())

    def _gone(self, reason: str, gaps: int, offsets: int) -> None:
        if gaps:
            entry = self.unconfirmable.setdefault(reason, [0, 0])
            entry[0] += gaps
            entry[1] += offsets

    def as_counts(self) -> dict:
        return {"gaps": self.gaps, "confirmed_gaps": self.confirmed_gaps, "confirmed_offsets": self.confirmed_offsets,
                "lost_gaps": self.lost_gaps, "lost_records": self.lost_records,
                "lost": [f"{t}[{p}]@{o}" for t, p, o in self.lost[:EXAMPLES]],
                "unconfirmable_gaps": self.unconfirmable_gaps,
                "unconfirmable": {k: {"gaps": g, "offsets": o} for k, (g, o) in self.unconfirmable.items()},
                "unprobed_gaps": self.unprobed_gaps, "unprobed_offsets": self.unprobed_offsets, "bound": self.bound}


@dataclass(frozen=True)
class KafkaGapProbe:
    """Reads bronze's unexplained offset gaps back from Kafka to tell the broker's own gaps
    (transaction markers, aborted transactions, compaction) from records bronze lost.

    One consumer (``read_committed``, assigned, never committing) for the whole run. Per partition,
    the gaps are read in offset order: the consumer is assigned at a gap's first offset (the low
    watermark if retention took the start) and consumes until the position passes the gap's end
    (a delivered record at or past it, or ``consumer.position`` after a fetch that skipped the
    gap's markers and aborted records); a following gap within ``read_through`` offsets is read on
    by the same fetches instead of a new assignment. Every delivered record is checked against
    every gap of its partition. Bounds: at most ``max_gaps`` gaps are probed (the largest first),
    ``max_seconds`` in all, and a gap without progress for ``stall_seconds`` is given up.
    ``consumer_factory`` (tests) returns an object with the ``confluent_kafka.Consumer`` methods
    list_topics, get_watermark_offsets, assign, consume, position and close.
    """

    bootstrap: str
    max_gaps: int = 10_000
    max_seconds: float = 300.0
    stall_seconds: float = 10.0
    read_through: int = 1_000
    poll_seconds: float = 0.05
    consumer_factory: Callable[[], Any] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **bounds) -> "KafkaGapProbe":
        return cls(settings.kafka_bootstrap, **bounds)

    def _consumer(self):
        if self.consumer_factory is not None:
            return self.consumer_factory()
        from confluent_kafka import Consumer

        from tasks.kafka import consumer_config

        return Consumer({**consumer_config(self.bootstrap, "lakehouse-verify"), "isolation.level": "read_committed",
                         # a new assignment per gap: fetch little past it, prefetch little
                         "fetch.max.bytes": 1 << 20, "max.partition.fetch.bytes": 1 << 20,
                         "queued.max.messages.kbytes": 4096})

    def probe(self, gaps: dict[Key, tuple[np.ndarray, np.ndarray]]) -> GapProbeResult:
        """Classify the gaps [a, b) of each (topic, partition) (sorted, disjoint)."""
        result = GapProbeResult(gaps=sum(len(a) for a, _ in gaps.values()))
        if result.gaps == 0:
            return result
        wanted = self._select(gaps)
        if result.gaps > self.max_gaps:
            result.bound = f"max_gaps={self.max_gaps}"
        started = time.monotonic()
        deadline = started + self.max_seconds
        consumer = None
        try:
            consumer = self._consumer()
            for topic in sorted({t for t, _ in gaps}):
                keys = sorted(k for k in gaps if k[0] == topic)
                partitions = self._partitions(consumer, topic)
                for key in keys:
                    a, b = gaps[key]
                    if partitions is None or key[1] not in partitions:
                        why = "topic no longer exists" if partitions is None else "partition no longer exists"
                        result._gone(why, len(a), int((b - a).sum()))
                        continue
                    if time.monotonic() >= deadline:
                        result.bound = result.bound or f"max_seconds={self.max_seconds:g}"
                        self._unprobed(result, a, b, np.ones(len(a), dtype=bool))
                        continue
                    self._probe_partition(consumer, key, a, b, wanted[key], deadline, result)
        except Exception as exc:  # noqa: BLE001 - an unreachable broker leaves gaps unconfirmed, not verify broken
            done = result.confirmed_gaps + result.lost_gaps + result.unconfirmable_gaps + result.unprobed_gaps
            result._gone(f"Kafka error: {type(exc).__name__}: {exc}", result.gaps - done, 0)
        finally:
            if consumer is not None:
                consumer.close()
        return result

    def _select(self, gaps: dict[Key, tuple[np.ndarray, np.ndarray]]) -> dict[Key, np.ndarray]:
        """Which gaps to probe: all, or the ``max_gaps`` largest (then the earliest)."""
        total = sum(len(a) for a, _ in gaps.values())
        if total <= self.max_gaps:
            return {key: np.ones(len(a), dtype=bool) for key, (a, _) in gaps.items()}
        keys = sorted(gaps)
        sizes = np.concatenate([gaps[k][1] - gaps[k][0] for k in keys])
        owner = np.concatenate([np.full(len(gaps[k][0]), i) for i, k in enumerate(keys)])
        chosen = np.zeros(total, dtype=bool)
        chosen[np.argsort(-sizes, kind="stable")[: self.max_gaps]] = True
        return {k: chosen[owner == i] for i, k in enumerate(keys)}

    @staticmethod
    def _partitions(consumer, topic: str) -> set[int] | None:
        metadata = consumer.list_topics(topic, timeout=10)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None
        return set(found.partitions)

    @staticmethod
    def _unprobed(result: GapProbeResult, a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> None:
        result.unprobed_gaps += int(mask.sum())
        result.unprobed_offsets += int((b[mask] - a[mask]).sum())

    def _probe_partition(self, consumer, key: Key, a: np.ndarray, b: np.ndarray, wanted: np.ndarray,
                         deadline: float, result: GapProbeResult) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        topic, partition = key
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        lo, hi = np.maximum(a, low), np.minimum(b, high)  # the part of each gap Kafka still has
        status = np.where(lo < hi, _PENDING, _GONE).astype(np.int8)
        lost = np.zeros(len(a), dtype=bool)
        timed_out = np.zeros(len(a), dtype=bool)
        read_from = cursor = None  # this assignment's start; the offset every record before it was read
        for i in np.nonzero(wanted & (status == _PENDING))[0].tolist():
            if status[i] != _PENDING:
                continue  # read through while probing an earlier gap
            if time.monotonic() >= deadline:
                result.bound = result.bound or f"max_seconds={self.max_seconds:g}"
                break
            start, end = int(lo[i]), int(hi[i])
            if cursor is None or start - cursor > self.read_through:
                # Only ever forward: librdkafka may report the previous assignment's position until
                # the new one fetches, and that is at most ``cursor``, below ``start``.
                consumer.assign([TopicPartition(topic, partition, start)])
                read_from = cursor = start
            progress_at = time.monotonic()
            out_of_time = False
            while cursor < end:
                now = time.monotonic()
                out_of_time = now >= deadline
                if out_of_time or now - progress_at >= self.stall_seconds:
                    break
                before = cursor
                messages = consumer.consume(num_messages=1_000, timeout=self.poll_seconds)
                for message in messages:
                    if message.error() is not None:
                        raise KafkaException(message.error())
                    offset = message.offset()
                    if (message.topic(), message.partition()) != key or offset < cursor:
                        continue  # delivered before (or for an earlier assignment)
                    j = int(np.searchsorted(a, offset, side="right")) - 1
                    if j >= 0 and offset < b[j]:
                        lost[j] = True
                        result.lost_records += 1
                        if len(result.lost) < LOST_EXAMPLES:
                            result.lost.append((topic, partition, offset))
                    cursor = offset + 1
                # after a fetch the position is past the markers and aborted records it skipped
                position = consumer.position([TopicPartition(topic, partition)])[0].offset
                if position is not None and position > cursor:
                    cursor = position
                if cursor > before:
                    progress_at = time.monotonic()
            # every pending gap the continuous read from ``read_from`` passed is settled
            done = (status == _PENDING) & (lo >= read_from) & (hi <= cursor)
            status[done] = _CONFIRMED
            if status[i] == _PENDING:
                if out_of_time:
                    result.bound = result.bound or f"max_seconds={self.max_seconds:g}"
                    break  # this gap and the rest: not probed
                timed_out[i] = True
                status[i] = _GONE
                cursor = None  # start afresh for the next gap
        status[lost] = _LOST
        whole = (lo == a) & (hi == b)
        confirmed = (status == _CONFIRMED) & whole
        result.confirmed_gaps += int(confirmed.sum())
        result.confirmed_offsets += int((b[confirmed] - a[confirmed]).sum())
        result.lost_gaps += int(lost.sum())
        rest = ~lost & ~confirmed & (status != _PENDING)
        below = rest & (lo > a) & ~timed_out
        beyond = rest & (hi < b) & ~below & ~timed_out
        reasons = (
            (below, f"offsets below the low watermark {low} (deleted by retention)"),
            (beyond, f"offsets at or past the high watermark {high} (topic recreated or truncated?)"),
            (rest & timed_out & ~below & ~beyond, f"no answer within {self.stall_seconds:g}s"),
        )
        for mask, why in reasons:
            result._gone(why, int(mask.sum()), int((b[mask] - a[mask]).sum()))
        unprobed = status == _PENDING
        if unprobed.any():
            self._unprobed(result, a, b, unprobed)


def describe_probe(probe: GapProbeResult, parts: list[str]) -> tuple[bool, bool]:
    """Append the probe's findings to ``parts``; returns (failed, warning)."""
    if probe.confirmed_gaps:
        parts.append(f"{plural(probe.confirmed_gaps, 'gap')} ({probe.confirmed_offsets} offsets) confirmed by "
                     "Kafka: no committed record inside (transaction markers, aborted transactions or compaction)")
    warning = False
    for why, (gaps, offsets) in sorted(probe.unconfirmable.items()):
        warning = True
        parts.append(f"{plural(gaps, 'gap')} ({offsets} offsets) unconfirmable: {why}")
    if probe.unprobed_gaps:
        warning = True
        parts.append(f"{plural(probe.unprobed_gaps, 'gap')} ({probe.unprobed_offsets} offsets) not probed: "
                     f"the probe's bound {probe.bound} cut it short")
    failed = probe.lost_records > 0
    if failed:
        shown = ", ".join(f"{t}[{p}]@{o}" for t, p, o in probe.lost[:EXAMPLES])
        parts.append(f"records missing from bronze: Kafka delivered {probe.lost_records} committed "
                     f"record(s) inside bronze's gaps ({plural(probe.lost_gaps, 'gap')}): {shown}"
                     + (", ..." if probe.lost_records > EXAMPLES else ""))
    return failed, warning
