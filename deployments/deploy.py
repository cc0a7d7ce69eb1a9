"""`lakehouse deploy`: the work pool, the per-table concurrency limits and every deployment of
prefect.yaml. Idempotent: what exists is left as it is, deployments are updated in place."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tasks.orchestration import lock_name
from tasks.settings import Settings
from tasks.tables import ALL_TABLES

PROJECT_DIR = Path(__file__).resolve().parents[1]
POOL = "lakehouse"
ZOMBIE_AUTOMATION = "lakehouse: crash flow runs whose process is gone"


class DeployError(RuntimeError):
    """`prefect deploy` failed; the message carries its output."""


@dataclass
class DeployResult:
    pool_created: bool = False
    limits_created: list[str] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)  # continuous mode: the scheduled mode's deployments


async def _ensure_pool_and_limits(settings: Settings) -> tuple[bool, list[str]]:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    from infra.services import prefect_client

    async with prefect_client(settings) as client:
        try:
            await client.read_work_pool(POOL)
            pool_created = False
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
            pool_created = True
        if not await client.read_automations_by_name(ZOMBIE_AUTOMATION):
            await client.create_automation(_zombie_automation())
        existing = {limit.name for limit in await client.read_global_concurrency_limits(limit=200)}
        created = []
        for spec in ALL_TABLES:
            name = lock_name(spec.identifier, settings)
            if name not in existing:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                created.append(name)
    return pool_created, created


def _zombie_automation():
    """Crash a worker's flow run whose process stopped sending heartbeats (the worker sets
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY): a run killed with its machine or by `lakehouse stack down`
    would otherwise stay Running and hold its deployment's one slot forever."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="A flow run with no heartbeat for 3 minutes is marked Crashed, freeing its slot.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=180),  # six missed heartbeats: never a busy run on a loaded box
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message="no heartbeat for 3 minutes: its process is gone")],
    )


async def _deployment_names(settings: Settings) -> list[str]:
    from infra.services import prefect_client

    async with prefect_client(settings) as client:
        deployments = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
    return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments)


def deploy(settings: Settings) -> DeployResult:
    """Create what is missing, then apply prefect.yaml."""
    import os

    result = DeployResult()
    result.pool_created, result.limits_created = asyncio.run(_ensure_pool_and_limits(settings))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")},
        "PREFECT_API_URL": settings.prefect_api_url,
        "LAKEHOUSE_PROJECT_DIR": str(PROJECT_DIR),
        "LAKEHOUSE_CATALOG_TAG": settings.catalog_tag,  # the triggers match this lakehouse's commits only
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    done = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise DeployError(f"prefect deploy --all failed (exit {done.returncode}):\n{tail}")
    if settings.pipeline_mode == "continuous":
        result.paused = asyncio.run(_pause_scheduled_mode(settings))
    result.deployments = asyncio.run(_deployment_names(settings))
    return result


SCHEDULED_MODE = ("ingest-bronze/ingest", "promote-silver/silver", "build-gold/gold")


async def _pause_scheduled_mode(settings: Settings) -> list[str]:
    """Continuous mode: the continuous process ingests and promotes, so the once-a-minute ingest
    and the silver and gold triggers (which its commits would fire: a queue of cold runs) are paused.
    `prefect deploy --all` in scheduled mode turns the triggers on again; resume the deployments with
    `prefect deployment resume`."""
    from infra.services import prefect_client

    paused = []
    async with prefect_client(settings) as client:
        for name in SCHEDULED_MODE:
            deployment = await client.read_deployment_by_name(name)
            await client.pause_deployment(deployment.id)
            for automation in await client.read_resource_related_automations(f"prefect.deployment.{deployment.id}"):
                await client.pause_automation(automation.id)
            paused.append(name)
    return paused
