"""The rule that picks the flow runs a stopped worker left Pending or Running."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from infra.flow_runs import RunInFlight, is_flow_process, orphaned

STARTED = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


def run(name: str, state: str = "PENDING", minutes_before: float = 5, pid: int | None = None) -> RunInFlight:
    return RunInFlight(name, name, state, STARTED - timedelta(minutes=minutes_before), pid)


def test_a_pending_run_without_a_process_from_before_the_worker_is_orphaned():
    assert [r.name for r in orphaned([run("stuck")], STARTED, alive=lambda pid: True)] == ["stuck"]


def test_runs_whose_process_is_gone_are_orphaned_and_live_ones_are_not():
    runs = [run("dead", "RUNNING", pid=111), run("live", "RUNNING", pid=222)]
    assert [r.name for r in orphaned(runs, STARTED, alive=lambda pid: pid == 222)] == ["dead"]


def test_runs_that_entered_their_state_after_the_worker_started_are_left_alone():
    runs = [run("new-pending", minutes_before=-1), run("new-running", "RUNNING", minutes_before=-1, pid=111)]
    assert orphaned(runs, STARTED, alive=lambda pid: False) == []


def test_a_process_counts_as_a_flow_process_only_if_it_runs_prefect():
    assert not is_flow_process(os.getpid())  # pytest, alive but not a flow run
    assert not is_flow_process(2**22 + 12345)  # beyond pid_max: no such process
