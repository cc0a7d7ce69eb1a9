"""Batches kept where the Daft jobs run, as the silver flow's steps hand them on (in-process)."""

from __future__ import annotations

import os

import daft
import pytest

from tasks.daft_host import KEPT_PER_HOST, Kept, LocalDaft, daft_jobs
from tasks.settings import load_settings


def numbers(n: int):
    return daft.from_pydict({"n": list(range(n))}).collect()


def total(frame, plus: int = 0) -> int:
    return sum(frame.to_pydict()["n"]) + plus


def test_a_kept_batch_is_handed_to_later_steps_by_its_handle():
    jobs = LocalDaft()
    kept = jobs.keep("run-1", numbers, 4)
    assert kept == Kept("run-1", 4)
    assert jobs.call(total, kept, 10) == 16


def test_a_dropped_or_evicted_batch_is_an_error_that_names_it():
    jobs = LocalDaft()
    first = jobs.keep("run-1", numbers, 1)
    jobs.drop("run-1")
    with pytest.raises(LookupError, match="run-1 is no longer kept"):
        jobs.call(total, first)
    handles = [jobs.keep(f"run-{i}", numbers, i) for i in range(2, 3 + KEPT_PER_HOST)]
    with pytest.raises(LookupError, match="run-2"):  # the oldest went first
        jobs.call(total, handles[0])
    assert jobs.call(total, handles[-1]) == sum(range(2 + KEPT_PER_HOST))


def test_without_a_ray_cluster_the_jobs_run_in_this_process(monkeypatch):
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)  # `make test` points LAKEHOUSE_CONFIG at the stack's file
    embedded = load_settings(profile="embedded", ray_address="")
    assert isinstance(daft_jobs(embedded, "ray:in-process"), LocalDaft)
    on_cluster = load_settings(profile="embedded", ray_address="auto")
    assert isinstance(daft_jobs(on_cluster, "native (Ray for tasks: ray:auto)"), LocalDaft)


def test_the_host_names_its_daft_plan_runner_apart_from_its_creators():
    from daft.runners import flotilla

    from tasks.daft_host import own_plan_runner

    before = flotilla._FLOTILLA_RUNNER_NAME_SUFFIX
    try:
        own_plan_runner()
        assert flotilla.get_flotilla_runner_actor_name().startswith("flotilla-plan-runner-daft-host-")
    finally:
        flotilla._FLOTILLA_RUNNER_NAME_SUFFIX = before
