"""Flow runs a stopped worker left behind, and how a fresh worker releases them.

A process worker runs each flow as its child. When the stack stops (or restarts the worker with
new settings), a run the worker had just made Pending, or was running, dies with it. Prefect
still shows it Pending or Running, and it keeps its deployment's only concurrency slot, so the
deployment's next runs wait forever (a heartbeat automation catches Running runs after minutes;
nothing catches a Pending run). A freshly started worker marks those runs Crashed, which
releases their slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from infra.process import is_running


@dataclass(frozen=True)
class RunInFlight:
    """A Pending or Running flow run of the pool, as the orphan rule sees it."""

    id: str
    name: str
    state: str  # PENDING or RUNNING
    since: datetime  # when it entered that state
    pid: int | None  # the process worker's infrastructure_pid


def is_flow_process(pid: int) -> bool:
    """A live, non-zombie process of this machine that runs Prefect (a pid reused by anything
    else does not count)."""
    if not is_running(pid):
        return False
    try:
        return b"prefect" in (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:  # it exited just now
        return False


def orphaned(runs: list[RunInFlight], worker_started: datetime,
             alive: Callable[[int], bool] = is_flow_process) -> list[RunInFlight]:
    """The runs no process will ever finish: in their state since before the worker started, and
    with no live flow process (a Pending run whose worker died before starting it has no pid)."""
    return [r for r in runs if r.since < worker_started and (r.pid is None or not alive(r.pid))]


def _pid(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:  # another worker type's identifier: not a local process
        return None


def crash_orphaned_runs(api_url: str, pool: str, worker_started: datetime, auth_string: str | None = None) -> list[str]:
    """Mark the pool's orphaned Pending and Running runs Crashed; returns their names."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    crashed = []
    with SyncPrefectClient(api=api_url, auth_string=auth_string) as client:
        found = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING]))
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            limit=200,
        )
        runs = [RunInFlight(str(r.id), r.name, r.state.type.value, r.state.timestamp, _pid(r.infrastructure_pid))
                for r in found if r.state is not None]
        for run in orphaned(runs, worker_started):
            message = (f"its worker stopped while it was {run.state.lower()}; "
                       "marked Crashed by the next worker to free its deployment's slot")
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            crashed.append(run.name)
    return crashed
