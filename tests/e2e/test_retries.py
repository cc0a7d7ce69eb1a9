"""A transient fault mid-run: the broker goes away and comes back; the ingest retries and completes,
and bronze holds every record exactly once."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone

import pytest

from infra.stack import Stack
from tasks.catalog import open_catalog
from tasks.simulator import TrafficProfile, produce
from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW

from tests.integration.private_lakehouse import s3_lake

pytestmark = pytest.mark.stack
# Recent Kafka timestamps: the broker deletes records older than its retention (7 days).
RECENT = datetime.now(timezone.utc)


def test_ingest_retries_through_a_broker_restart_without_loss_or_duplicates(stack_settings, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.ingest import ingest_flow

    topic = f"retry-{uuid.uuid4().hex[:8]}"
    settings = s3_lake(stack_settings, tmp_path, "retries", topic)
    sent = produce(settings, TrafficProfile(events=2000, seed=5, end=RECENT))
    stack = Stack(stack_settings)
    stack.down(["kafka"])
    restarter = threading.Timer(8.0, lambda: stack.up(["kafka"]))
    restarter.start()
    try:
        report = ingest_flow(settings=settings, max_batches=10)
    finally:
        restarter.join()
        stack.up(["kafka"])
    assert report["total_records"] == sent.events

    rows = open_catalog(settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier).scan(
        row_filter=f"topic == '{topic}'").to_arrow()
    keys = list(zip(rows.column("partition").to_pylist(), rows.column("offset").to_pylist()))
    assert len(keys) == len(set(keys)) == sent.events

    async def plan_attempts() -> int:
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
        from prefect.client.schemas.sorting import TaskRunSort

        async with get_client() as client:
            runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="plan_batch")),
                sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=5,
            )
            return max(r.run_count for r in runs)

    import asyncio

    assert asyncio.run(plan_attempts()) > 1, "the planning task did not retry"
