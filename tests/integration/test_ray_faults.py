"""Ray faults mid-flow: the Ray head stopped during a silver promotion, the warm Daft host actor
killed while it holds a promotion's batch, a bronze writer actor killed while it reads Kafka.
After the fault the chain is rerun; bronze must hold every produced record once, silver must equal
the silver of a clean lakehouse fed the same records, and `verify` must be green.

Every flow here runs in a process of its own (``ray_fault_child``): Ray ends a driver whose head
goes away. This module runs just before the stack life-cycle test (tests/conftest.py orders them),
and leaves the Ray head running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest

from infra.stack import Stack
from tasks.simulator import TrafficProfile, produce
from tests.conftest import ROOT
from tests.integration.private_lakehouse import lake_environment, s3_lake
from tests.integration.test_ingest_exactly_once import assert_exactly_once
from tests.integration.test_service_faults import _silver_state, _verified

pytestmark = pytest.mark.stack
RECENT = datetime.now(timezone.utc)


def _lakehouse(settings, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=lake_environment(settings), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _with_fault(settings, case: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.integration.ray_fault_child", case], env=lake_environment(settings),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clean_silver(stack_settings, tmp_path_factory):
    """One topic of known records for both silver cases, and the silver state a clean lakehouse
    makes of it (computed once: it does not depend on the case)."""
    import ray

    ray.shutdown()  # this process must not be a driver of a head that is about to stop
    topic = f"it-ray-{uuid.uuid4().hex[:8]}"
    clean = s3_lake(stack_settings, tmp_path_factory.mktemp("rayclean"), "rayclean", topic)
    sent = produce(clean, TrafficProfile(events=3000, seed=51, duplicate_rate=0.05, malformed_rate=0.02,
                                         late_rate=0.02, end=RECENT))
    _lakehouse(clean, "run", "ingest", "--until-caught-up")
    _lakehouse(clean, "run", "silver")
    return topic, sent.events, _silver_state(clean)


@pytest.fixture
def stack(stack_settings):
    import ray

    ray.shutdown()
    yield Stack(stack_settings)
    Stack(stack_settings).up()


@pytest.mark.parametrize("case", ["head-during-silver", "host-during-silver"])
def test_ray_gone_during_a_silver_promotion(clean_silver, stack, stack_settings, tmp_path, case):
    topic, events, clean_state = clean_silver
    faulty = s3_lake(stack_settings, tmp_path, f"rayfault-{case[:4]}", topic)
    _lakehouse(faulty, "run", "ingest", "--until-caught-up")
    assert_exactly_once(faulty, events)
    faulted = _with_fault(faulty, case)
    assert "fired" in faulted.stdout, faulted.stdout + faulted.stderr[-3000:]
    stack.up(["ray"])  # back, if the fault stopped it
    _lakehouse(faulty, "run", "silver")
    assert _silver_state(faulty) == clean_state
    _verified(faulty)


def test_writer_actor_killed_while_reading_kafka(stack, stack_settings, tmp_path):
    faulty = s3_lake(stack_settings, tmp_path, "rayfault", f"it-ray-{uuid.uuid4().hex[:8]}")
    sent = produce(faulty, TrafficProfile(events=60_000, seed=61, end=RECENT))
    faulted = _with_fault(faulty, "writer-during-ingest")
    assert "fired" in faulted.stdout, faulted.stdout + faulted.stderr[-3000:]
    _lakehouse(faulty, "run", "ingest", "--until-caught-up")
    assert_exactly_once(faulty, sent.events)
    _verified(faulty)
