"""`lakehouse demo`: the whole platform from nothing to gold metrics, through Prefect.

Stack up → deploy → produce a few days of traffic → run the ingest deployment → the event
triggers run silver and gold → wait for them → show gold and reconcile the layers (``lakehouse
verify``). Each step is idempotent, so a second
demo reuses what the first one started and built.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from infra.stack import Stack
from deployments.deploy import deploy
from tasks.settings import Settings
from tasks.simulator import TrafficProfile, produce

Step = Callable[[str], None]
WAIT_TIMEOUT_S = 900


class DemoError(RuntimeError):
    """A flow run of the demo failed or never came; the message says which and where to look."""


@dataclass
class DemoResult:
    seconds: dict[str, float] = field(default_factory=dict)
    produced: int = 0
    runs: dict[str, str] = field(default_factory=dict)  # deployment -> flow run name
    gold_rows: list[dict] = field(default_factory=list)
    verify: object = None  # tasks.verify.VerifyReport of the lakehouse the demo built


async def _wait_for_chain(settings: Settings, since: datetime, step: Step) -> dict[str, str]:
    """The ingest run we started, then a silver and a gold run that events triggered after it."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterStartTime
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + WAIT_TIMEOUT_S
    from infra.services import prefect_client

    async with prefect_client(settings) as client:
        runs: dict[str, str] = {}
        previous_end = since
        for deployment in ("ingest", "silver", "gold"):
            step(f"waiting for the {deployment} run")
            while True:
                if time.monotonic() > deadline:
                    raise DemoError(f"no completed {deployment} run after {WAIT_TIMEOUT_S}s; see the Prefect UI")
                found = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                    flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=previous_end)),
                    sort=FlowRunSort.START_TIME_ASC,
                    limit=20,
                )
                failed = [r for r in found if r.state and r.state.is_final() and not r.state.is_completed()
                          and r.state_name != "Cancelled"]
                if failed:
                    raise DemoError(f"{deployment} run {failed[0].name} ended {failed[0].state_name}; see the Prefect UI")
                done = [r for r in found if r.state and r.state.is_completed()]
                if done:
                    runs[deployment] = done[0].name
                    previous_end = done[0].end_time or previous_end
                    break
                await asyncio.sleep(2)
    return runs


def run_demo(settings: Settings, events: int, days: int, step: Step) -> DemoResult:
    from prefect.deployments import run_deployment

    result = DemoResult()

    def timed(name: str, fn):
        began = time.monotonic()
        value = fn()
        result.seconds[name] = round(time.monotonic() - began, 1)
        return value

    step("bringing the stack up")
    timed("stack_up", lambda: Stack(settings).up(report=lambda svc, msg: step(f"{svc}: {msg}")))
    step("deploying the flows")
    timed("deploy", lambda: deploy(settings))
    step(f"producing {events} events over {days} days")
    report = timed("produce", lambda: produce(settings, TrafficProfile(events=events, days=days, seed=int(time.time()),
                                                                       end=datetime.now(timezone.utc))))
    result.produced = report.events
    since = datetime.now(timezone.utc)
    step("running the ingest deployment; events trigger silver and gold")
    timed("trigger", lambda: run_deployment("ingest-bronze/ingest", parameters={"max_batches": 1000}, timeout=0))
    result.runs = timed("pipeline", lambda: asyncio.run(_wait_for_chain(settings, since, step)))
    result.gold_rows = _latest_gold(settings)
    step("reconciling bronze, silver and gold (lakehouse verify)")
    result.verify = timed("verify", lambda: _verify(settings))
    result.seconds["total"] = round(sum(result.seconds.values()), 1)
    return result


def _verify(settings: Settings):
    from tasks.catalog import open_catalog
    from tasks.verify import verify

    return verify(open_catalog(settings, "serving"), settings)


def _latest_gold(settings: Settings) -> list[dict]:
    from tasks.catalog import open_catalog
    from tasks.tables import GOLD_DAILY_CONVERSION_METRICS, ensure_table

    table = ensure_table(open_catalog(settings, "serving"), settings, GOLD_DAILY_CONVERSION_METRICS)
    rows = table.scan().to_arrow().to_pylist()
    return sorted(rows, key=lambda r: (r["event_date"], r["direction"]))
