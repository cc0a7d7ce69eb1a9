"""Where bronze stands in Kafka, checked before every batch, and the audited way to move it.

Bronze's snapshot summary holds the next offset of every partition. Two Kafka events make that
offset meaningless, and neither may pass silently:
- the stored offset is **beyond** the partition's high watermark: the topic was deleted and
  recreated (or truncated), so the offsets now name other records; ingest would stall forever;
- the stored offset is **below** the low watermark: Kafka's retention deleted records bronze
  never read.
Ingest stops with an :class:`OffsetsOutOfRangeError` naming the partitions, the offsets and the
command that resolves it. ``lakehouse ingest reset`` then moves the offsets in one bronze commit
with no data, whose summary records the decision (``lakehouse.ingest.reset``): the partition,
the offset it was at, the offset it moved to, the records skipped, why and by whom. ``lakehouse
history`` and ``lakehouse verify`` read it from there.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Mapping

RESET_KEY = "lakehouse.ingest.reset"
TARGETS = ("earliest", "latest")


@dataclass(frozen=True)
class OffsetProblem:
    topic: str
    partition: int
    stored: int  # bronze's next offset
    low: int
    high: int

    @property
    def kind(self) -> str:
        return "expired" if self.stored < self.low else "beyond"

    def describe(self) -> str:
        if self.kind == "expired":
            return (f"{self.topic}[{self.partition}]: records {self.stored}..{self.low - 1} "
                    f"({self.low - self.stored}) were deleted by Kafka retention before bronze read them")
        return (f"{self.topic}[{self.partition}]: bronze's next offset {self.stored} is beyond the high watermark "
                f"{self.high} (was the topic deleted and recreated?)")


class OffsetsOutOfRangeError(RuntimeError):
    """Bronze's offsets no longer fit the topic; an operator decides with ``lakehouse ingest reset``."""

    def __init__(self, problems: list[OffsetProblem]):
        self.problems = problems
        partitions = " ".join(f"--partition {p.partition}" for p in problems)
        hint = ("after checking what happened, move the offsets with an audited reset: "
                f"`lakehouse ingest reset {partitions} --to earliest|latest|OFFSET --reason '...'`")
        super().__init__("; ".join(p.describe() for p in problems) + "; " + hint)


def offset_problems(topic: str, stored: Mapping[int, int], marks: Mapping[int, tuple[int, int]]) -> list[OffsetProblem]:
    """Partitions whose stored next offset lies outside [low, high]. A partition bronze has no
    offset for starts at its low watermark and is never a problem; a stored partition the topic
    no longer has is one (low = high = -1)."""
    problems = []
    for partition, offset in sorted(stored.items()):
        low, high = marks.get(partition, (-1, -1))
        if partition not in marks or offset < low or offset > high:
            problems.append(OffsetProblem(topic, partition, offset, low, high))
    return problems


@dataclass(frozen=True)
class ResetDecision:
    """One partition's move, as recorded in the reset commit's summary."""

    topic: str
    partition: int
    from_offset: int | None  # bronze's next offset before the reset (None: never ingested)
    to_offset: int
    skipped: int  # offsets jumped over forward (records bronze will never hold); 0 when moving back
    reason: str
    by: str
    at: str

    def as_dict(self) -> dict:
        return asdict(self)


def plan_reset(topic: str, stored: Mapping[int, int], marks: Mapping[int, tuple[int, int]], to: str,
               partitions: list[int] | None, reason: str, by: str | None = None,
               at: datetime | None = None) -> list[ResetDecision]:
    """The moves a reset makes: ``to`` is ``earliest`` (the low watermark), ``latest`` (the high
    watermark) or an offset within [low, high]. Raises ValueError naming what is wrong."""
    if not reason.strip():
        raise ValueError("--reason is required: the reset is recorded for auditors")
    chosen = sorted(marks) if not partitions else sorted(set(partitions))
    unknown = [p for p in chosen if p not in marks]
    if unknown:
        raise ValueError(f"topic {topic!r} has no partition {unknown} (it has {sorted(marks)})")
    if to not in TARGETS:
        try:
            int(to)
        except ValueError:
            raise ValueError(f"--to must be earliest, latest or an offset, got {to!r}") from None
    by = by or f"{getpass.getuser()}@{socket.gethostname()}"
    stamp = (at or datetime.now(timezone.utc)).isoformat()
    decisions = []
    for partition in chosen:
        low, high = marks[partition]
        target = low if to == "earliest" else high if to == "latest" else int(to)
        if not low <= target <= high:
            raise ValueError(f"{topic}[{partition}]: offset {target} is outside the partition's range [{low}, {high}]")
        before = stored.get(partition)
        # offsets [start, target) will never be in bronze; a recreated topic numbers from its low mark
        start = low if before is None or before > high else before
        skipped = max(0, target - start)
        decisions.append(ResetDecision(topic, partition, before, target, skipped, reason.strip(), by, stamp))
    return decisions


def encode_reset(decisions: list[ResetDecision]) -> str:
    return json.dumps([d.as_dict() for d in decisions], sort_keys=True)


def decode_reset(raw: str) -> list[dict]:
    return json.loads(raw)
