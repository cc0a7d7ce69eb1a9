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


class _Method:
    def __init__(self, host, name):
        self.host, self.name = host, name

    def remote(self, *args):
        return lambda: self.host.answer(self.name, *args)


class _FakeHost:
    """A host handle whose calls fail as a retired host's do until ``alive``."""

    def __init__(self, alive: bool):
        self.alive, self.calls = alive, []

    def __getattr__(self, name):
        return _Method(self, name)

    def answer(self, name, *args):
        from ray.exceptions import RayActorError

        self.calls.append(name)
        if not self.alive:
            raise RayActorError()
        return f"{name} done"


def test_a_host_that_retired_as_the_run_reached_it_is_replaced_once(monkeypatch):
    import ray

    from tasks.daft_host import Kept, RemoteDaft

    monkeypatch.setattr(ray, "get", lambda ref: ref())
    monkeypatch.setattr("tasks.daft_host.time.sleep", lambda s: None)
    hosts = iter([_FakeHost(alive=False), _FakeHost(alive=True)])
    made = []
    remote = RemoteDaft(lambda: made.append(next(hosts)) or made[-1])
    assert remote.keep("run-1", print) == "keep done"  # sent again to a new host
    assert [h.calls for h in made] == [["keep"], ["keep"]]

    # a call on a batch the dead host kept is not sent again: the batch is gone
    dead = RemoteDaft(lambda: _FakeHost(alive=False))
    from ray.exceptions import RayActorError

    import pytest

    with pytest.raises(RayActorError):
        dead.call(print, Kept("run-1", 3))
    dead.drop("run-1")  # nothing to drop on a dead host: no error
