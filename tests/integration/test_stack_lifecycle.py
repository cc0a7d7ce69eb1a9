"""`lakehouse stack up | status | down` through the real command, and data that survives a restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pyarrow as pa
import pytest

from infra.process import PidFile, port_in_use, session_members
from infra.services import all_services
from tasks.catalog import open_catalog, s3_client
from tasks.kafka import admin_client, ensure_topic
from tests.conftest import ROOT, stack_environment

pytestmark = pytest.mark.stack


def lakehouse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "stack", *args],
        env=stack_environment(), cwd=ROOT, capture_output=True, text=True, timeout=900,
    )


def _make_marks(settings) -> dict[str, str]:
    """One topic, object, table and Prefect deployment that must outlive `down` + `up`."""
    tag = uuid.uuid4().hex[:8]
    topic = f"lifecycle-{tag}"
    ensure_topic(settings, topic, partitions=1)
    key = f"checks/lifecycle-{tag}.txt"
    s3_client(settings, "admin").put_object(Bucket="lakehouse-silver", Key=key, Body=b"still here")
    table_name = f"bronze.lifecycle_check_{tag}"
    catalog = open_catalog(settings, "admin")
    table = catalog.create_table(
        table_name,
        schema=pa.schema([pa.field("n", pa.int64())]),
        location=f"{settings.layer_location('bronze')}/lifecycle_check_{tag}",
    )
    table.append(pa.table({"n": [1, 2, 3]}))
    deployment = asyncio.run(_create_deployment(settings, f"lifecycle-{tag}"))
    return {"topic": topic, "key": key, "table": table_name, "deployment": deployment}


async def _create_deployment(settings, name: str) -> str:
    from infra.services import prefect_client

    async with prefect_client(settings) as client:
        flow_id = await client.create_flow_from_name("lifecycle-check")
        await client.create_deployment(flow_id=flow_id, name=name)
    return f"lifecycle-check/{name}"


async def _strand_pending_run(settings, tag: str) -> tuple[str, str]:
    """A run the worker made Pending (holding its deployment's only slot) but never started, as
    when the stack stops between the two. Scheduled a day ahead so the live worker leaves it."""
    from datetime import datetime, timedelta, timezone

    from infra.services import prefect_client
    from prefect.states import Pending, Scheduled

    async with prefect_client(settings) as client:
        flow_id = await client.create_flow_from_name("lifecycle-check")
        deployment_id = await client.create_deployment(flow_id=flow_id, name=f"stranded-{tag}",
                                                       work_pool_name="lakehouse", concurrency_limit=1)
        run = await client.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=datetime.now(timezone.utc) + timedelta(days=1)))
        result = await client.set_flow_run_state(run.id, Pending())
        assert result.state is not None and result.state.is_pending(), result
    return str(run.id), f"deployment:{deployment_id}"


async def _run_state_and_slots(settings, run_id: str, limit_name: str) -> tuple[str, int]:
    from infra.services import prefect_client

    async with prefect_client(settings) as client:
        run = await client.read_flow_run(run_id)
        limit = await client.read_global_concurrency_limit_by_name(limit_name)
        return run.state.type.value, limit.active_slots


async def _deployment_exists(settings, name: str) -> bool:
    from infra.services import prefect_client

    async with prefect_client(settings) as client:
        deployment = await client.read_deployment_by_name(name)
        return deployment is not None


def test_up_twice_status_down_up_keeps_data(stack_settings):
    # This process may be a driver of the Ray head that `down` is about to stop; Ray would end a
    # driver whose head went away, so leave first. (This test runs last: nothing after it uses Ray.)
    import ray

    ray.shutdown()
    services = all_services(stack_settings)
    first = lakehouse("up")
    assert first.returncode == 0, first.stderr
    pids_before = {s.name: PidFile(s.pid_path).live_pid() for s in services}
    second = lakehouse("up")  # idempotent: nothing restarts
    assert second.returncode == 0, second.stderr
    assert {s.name: PidFile(s.pid_path).live_pid() for s in services} == pids_before

    status = lakehouse("status")
    assert status.returncode == 0, status.stdout + status.stderr
    lines = status.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == [s.name for s in services]
    assert all("healthy" in line and "UNHEALTHY" not in line for line in lines)

    marks = _make_marks(stack_settings)
    stranded, limit = asyncio.run(_strand_pending_run(stack_settings, uuid.uuid4().hex[:8]))
    assert asyncio.run(_run_state_and_slots(stack_settings, stranded, limit)) == ("PENDING", 1)

    down = lakehouse("down")
    assert down.returncode == 0, down.stderr
    for service in services:
        for port in service.ports():
            assert not port_in_use("127.0.0.1", port), f"{service.name} still listens on {port}"
        assert not session_members(pids_before[service.name]), f"{service.name} left processes behind"
    assert lakehouse("status").returncode == 1

    again = lakehouse("up")
    assert again.returncode == 0, again.stderr
    assert marks["topic"] in admin_client(stack_settings).list_topics(timeout=10).topics
    body = s3_client(stack_settings, "admin").get_object(Bucket="lakehouse-silver", Key=marks["key"])["Body"].read()
    assert body == b"still here"
    table = open_catalog(stack_settings, "serving").load_table(marks["table"])
    assert sorted(table.scan().to_arrow().column("n").to_pylist()) == [1, 2, 3]
    assert asyncio.run(_deployment_exists(stack_settings, marks["deployment"]))
    # the fresh worker crashed the run its predecessor left Pending, which freed the slot
    assert asyncio.run(_run_state_and_slots(stack_settings, stranded, limit)) == ("CRASHED", 0)
    open_catalog(stack_settings, "admin").drop_table(marks["table"])
