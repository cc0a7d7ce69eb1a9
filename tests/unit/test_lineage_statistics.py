"""Output statistics of a run that commits a table several times (silver in bounded batches, ingest
in several batches): the rows, bytes and files of every commit the run made, summed; not the last
commit's alone, not a commit from before the run began, not a compaction between two batches.
Hand-made snapshot histories; the expected sums are written out by hand."""

from __future__ import annotations

from tasks.commits import RUN_ID_KEY
from tasks.lineage.run import run_commits, run_statistics
from tasks.lineage.walk import SnapshotRecord

STARTED_MS = 10_000  # the run began here


def _commit(snapshot_id: int, parent: int | None, at_ms: int, rows: int, size: int, files: int,
            run_id: str | None = "batch") -> SnapshotRecord:
    summary = {"added-records": str(rows), "added-files-size": str(size), "added-data-files": str(files)}
    if run_id is not None:
        summary[RUN_ID_KEY] = run_id
    return SnapshotRecord(snapshot_id, parent, snapshot_id, at_ms, summary)


BEFORE = _commit(1, None, 9_000, rows=500, size=50_000, files=5, run_id="an-earlier-run")


def test_one_batch_counts_its_one_commit():
    history = [BEFORE, _commit(2, 1, 10_500, rows=30, size=3_000, files=1)]
    assert run_statistics(history, 2, STARTED_MS) == (30, 3_000, 1)


def test_three_batches_count_all_three_commits_and_not_the_one_before_the_run():
    history = [BEFORE,
               _commit(2, 1, 10_500, rows=30, size=3_000, files=1, run_id="b1"),
               _commit(3, 2, 11_000, rows=20, size=2_100, files=2, run_id="b2"),
               _commit(4, 3, 11_800, rows=7, size=900, files=1, run_id="b3")]
    assert run_statistics(history, 4, STARTED_MS) == (30 + 20 + 7, 3_000 + 2_100 + 900, 1 + 2 + 1)
    assert [s.snapshot_id for s in run_commits(history, 4, STARTED_MS)] == [4, 3, 2]


def test_a_compaction_between_two_batches_is_not_the_runs():
    compaction = _commit(3, 2, 10_900, rows=30, size=2_500, files=1, run_id=None)  # rewrote batch 1's file
    history = [BEFORE, _commit(2, 1, 10_500, rows=30, size=3_000, files=1, run_id="b1"), compaction,
               _commit(4, 3, 11_000, rows=20, size=2_100, files=2, run_id="b2")]
    assert run_statistics(history, 4, STARTED_MS) == (50, 5_100, 3)


def test_a_maintenance_commit_counts_alone():
    compaction = _commit(3, 2, 10_900, rows=30, size=2_500, files=1, run_id=None)
    history = [BEFORE, _commit(2, 1, 10_500, rows=30, size=3_000, files=1), compaction]
    assert run_statistics(history, 3, STARTED_MS) == (30, 2_500, 1)


def test_a_figure_no_summary_records_stays_unknown_and_an_unknown_snapshot_has_none():
    bare = SnapshotRecord(2, 1, 2, 10_500, {RUN_ID_KEY: "b1", "added-records": "4"})
    assert run_statistics([BEFORE, bare], 2, STARTED_MS) == (4, None, None)
    assert run_statistics([BEFORE], 99, STARTED_MS) == (None, None, None)
