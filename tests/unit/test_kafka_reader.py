"""The partition reader against a scripted consumer: offset gaps never move a range past its end.

A transactional producer leaves a commit marker after every transaction, aborted records are
skipped under read_committed, and compaction removes offsets: the reader sees gaps. Records past
the planned end may already sit in the consumer's prefetch. The reader must stop at the planned
end, and report exactly that end, whatever the gap shape.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from tasks.kafka import PartitionRange, ReadProgress, read_chunks

NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)


class _Message:
    def __init__(self, offset: int):
        self._offset = offset

    def error(self):
        return None

    def offset(self):
        return self._offset

    def timestamp(self):
        return (1, 1_700_000_000_000 + self._offset)

    def key(self):
        return None

    def value(self):
        return b'{"offset": %d}' % self._offset

    def headers(self):
        return None


class _Position:
    def __init__(self, offset: int):
        self.offset = offset


class ScriptedConsumer:
    """A partition log of ``records`` (offsets that hold data) ending at ``log_end``; every other
    offset below ``log_end`` is a gap (a marker, an aborted or a compacted record). ``consume``
    delivers the next records in order, as a prefetching consumer does, past any planned end."""

    def __init__(self, records: list[int], log_end: int, per_poll: int = 10_000):
        self.records, self.log_end, self.per_poll = sorted(records), log_end, per_poll
        self.position_ = 0
        self.closed = False

    def assign(self, partitions):
        self.position_ = partitions[0].offset

    def consume(self, num_messages: int, timeout: float):
        pending = [o for o in self.records if o >= self.position_][: min(num_messages, self.per_poll)]
        if not pending:
            self.position_ = max(self.position_, self.log_end)  # the fetch skipped the trailing gap
            return []
        self.position_ = pending[-1] + 1
        return [_Message(o) for o in pending]

    def position(self, partitions):
        return [_Position(self.position_)]

    def close(self):
        self.closed = True


def _read(consumer: ScriptedConsumer, start: int, end: int, max_records: int = 1_000_000):
    wanted = PartitionRange("t", 0, start, end, max_records=max_records, max_bytes=1 << 30,
                            deadline=time.time() + 5)
    progress = ReadProgress(start)
    chunks = list(read_chunks(wanted, "unused:9092", NOW, "run", progress, consumer_factory=lambda: consumer))
    offsets = [o for chunk in chunks for o in chunk.column("offset").to_pylist()]
    assert consumer.closed
    return offsets, progress


@pytest.mark.parametrize("per_poll", [10_000, 1, 3])
def test_range_ending_in_a_marker_stops_at_its_end_with_later_records_prefetched(per_poll):
    # records 0-4, commit marker 5, planned end 6; a second transaction 6-9 lands after planning
    consumer = ScriptedConsumer([0, 1, 2, 3, 4, 6, 7, 8, 9], log_end=11, per_poll=per_poll)
    offsets, progress = _read(consumer, 0, 6)
    assert offsets == [0, 1, 2, 3, 4]
    assert progress.next_offset == 6 and progress.records == 5


@pytest.mark.parametrize("per_poll", [10_000, 1])
def test_gap_in_the_middle_is_skipped_and_the_range_is_read_to_its_end(per_poll):
    consumer = ScriptedConsumer([0, 1, 2, 4, 5, 6, 7, 9, 10], log_end=11, per_poll=per_poll)
    offsets, progress = _read(consumer, 0, 8)
    assert offsets == [0, 1, 2, 4, 5, 6, 7]
    assert progress.next_offset == 8


def test_gap_at_the_end_with_nothing_after_it():
    consumer = ScriptedConsumer([0, 1, 2, 3, 4], log_end=6)
    offsets, progress = _read(consumer, 0, 6)
    assert offsets == [0, 1, 2, 3, 4] and progress.next_offset == 6


@pytest.mark.parametrize("records,log_end", [([], 5), ([5, 6, 7], 9)])
def test_a_range_of_only_gaps_reads_nothing_and_ends_at_its_end(records, log_end):
    # offsets 0-3 of an aborted transaction and its marker at 4; maybe records after the range
    consumer = ScriptedConsumer(records, log_end=log_end)
    offsets, progress = _read(consumer, 0, 5)
    assert offsets == [] and progress.next_offset == 5 and progress.records == 0


def test_a_record_limit_inside_the_range_stops_one_past_the_last_row():
    consumer = ScriptedConsumer([0, 1, 2, 4, 5, 6], log_end=7)
    offsets, progress = _read(consumer, 0, 7, max_records=4)
    assert offsets == [0, 1, 2, 4] and progress.next_offset == 5


def test_consecutive_ranges_cover_every_record_once():
    """Planning [0, 6) then [6, 12) over a log with markers at 5 and 11: every record once."""
    log = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    first, progress = _read(ScriptedConsumer(log, log_end=12), 0, 6)
    second, after = _read(ScriptedConsumer(log, log_end=12), progress.next_offset, 12)
    assert first + second == log and after.next_offset == 12
