"""Where a flow's Daft jobs run: in the flow's process, or on a warm Daft host on the Ray cluster.

Daft on Ray starts its own actors (a plan runner and one worker per node) for every Ray job, and
every flow run is a new job: about 3 s on two cores before any data moves. On a cluster, the flow
instead sends its Daft steps to a ``DaftHost``, a warm actor (``tasks.warm_actors``) whose Daft
actors stay up between runs. A step is a module-level function; its arguments and its result
(Arrow tables, lists, numbers) travel through the object store. A batch that several steps of a
run use is kept in the host under the run's key (``keep``) and passed to later steps as that
``Kept`` handle, so it crosses the object store once; the run drops it at the end.

Without a cluster (the embedded profile's in-process Ray, Daft's native runner) the same calls
run in the flow's process: ``LocalDaft`` has the same three methods.

The host only plans and drives a job; it does not run it. Daft's Ray runner (flotilla) gives the
host a plan-runner actor and one worker actor per alive node (pinned to it, sized to its CPUs,
and re-listed as nodes join), and sends each partition's task to a worker. So a job spreads over
every node, as far as its partitions allow: ``compute_partitions`` (``silver.spread``) decides
that, not the host. A kept batch stays in the object store of the nodes that computed it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from tasks import warm_actors
from tasks.settings import Settings

NAME_PREFIX = "daft-host-"
KEPT_PER_HOST = 2  # batches kept at once; a run that died without dropping its batch is evicted
KEPT_MAX_SECONDS = 3600.0  # a host keeping a batch does not retire when idle, up to this long


@dataclass(frozen=True)
class Kept:
    """A batch (a collected Daft DataFrame) kept where the Daft jobs run, by key."""

    key: str
    rows: int


class LocalDaft:
    """Daft jobs in this process, on whatever runner it uses: ``keep``/``call``/``drop`` over
    batches held here. ``DaftHost`` is the same on a warm actor."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, Any] = OrderedDict()

    def keep(self, key: str, step: Callable, *args) -> Kept:
        frame = step(*self._resolve(args))
        self._kept[key] = frame
        while len(self._kept) > KEPT_PER_HOST:
            self._kept.popitem(last=False)
        return Kept(key, frame.count_rows())

    def call(self, step: Callable, *args):
        return step(*self._resolve(args))

    def drop(self, key: str) -> None:
        self._kept.pop(key, None)

    def _resolve(self, args: tuple) -> list:
        missing = [a.key for a in args if isinstance(a, Kept) and a.key not in self._kept]
        if missing:
            raise LookupError(f"batch {missing[0]} is no longer kept here (the Daft host restarted or evicted it)")
        return [self._kept[a.key] if isinstance(a, Kept) else a for a in args]


class DaftHost(warm_actors.WarmActor, LocalDaft):
    """The warm actor: Daft on the cluster, its actors started once."""

    def __init__(self, idle_seconds: float):
        import daft

        warm_actors.WarmActor.__init__(self, idle_seconds)
        LocalDaft.__init__(self)
        own_plan_runner()
        daft.set_runner_ray()  # inside a Ray worker: the cluster this actor runs on

    def keep(self, key: str, step: Callable, *args) -> Kept:
        try:
            return LocalDaft.keep(self, key, step, *args)
        finally:
            self.used()

    def call(self, step: Callable, *args):
        try:
            return LocalDaft.call(self, step, *args)
        finally:
            self.used()

    def drop(self, key: str) -> None:
        LocalDaft.drop(self, key)
        self.used()

    def retire(self) -> None:
        """Another code version took over: a host that keeps a batch serves a run between its
        steps, so it leaves that to ``retire_if_idle``."""
        if not self._kept:
            warm_actors.WarmActor.retire(self)

    def retire_if_idle(self) -> None:
        """A host that keeps a batch serves a run between its steps: it stays, unless the batch
        is an hour old (its run died without dropping it)."""
        if self._kept and time.monotonic() - self._last_used < KEPT_MAX_SECONDS:
            return
        warm_actors.WarmActor.retire_if_idle(self)


def own_plan_runner() -> None:
    """Give this process's Daft a plan-runner actor of its own.

    Daft names that actor by Ray job, and an actor carries the job of the driver that created it:
    the host would share its creator's runner (a test session or notebook that also runs Daft) and
    lose it when that driver exits. Daft 0.7 keeps the name's suffix in a module global; if that
    ever changes, this fails loudly rather than share silently.
    """
    import uuid

    from daft.runners import flotilla

    if not hasattr(flotilla, "_FLOTILLA_RUNNER_NAME_SUFFIX"):
        raise RuntimeError("daft no longer names its plan runner by _FLOTILLA_RUNNER_NAME_SUFFIX; "
                           "update tasks.daft_host.own_plan_runner for this daft version")
    flotilla._FLOTILLA_RUNNER_NAME_SUFFIX = f"daft-host-{uuid.uuid4().hex}"


class RemoteDaft:
    """The flow's view of a ``DaftHost``: the same calls, answered by the actor.

    A host retires when idle, and a run may reach it just as it does (the retirement was queued
    before the run's first call): a call that holds no ``Kept`` batch is then sent once more to a
    new host. Every call computes and returns; none commits, so sending it again is safe. A call
    on a batch the dead host kept fails: that batch is gone with it."""

    def __init__(self, connect: Callable[[], object]):
        self._connect = connect
        self._actor = connect()

    def keep(self, key: str, step: Callable, *args) -> Kept:
        return self._run("keep", key, step, *args)

    def call(self, step: Callable, *args):
        return self._run("call", step, *args)

    def drop(self, key: str) -> None:
        from ray.exceptions import RayActorError

        try:
            self._run("drop", key)
        except RayActorError:
            pass  # the host is gone, and what it kept went with it

    def _run(self, method: str, *args):
        import ray
        from ray.exceptions import RayActorError

        try:
            return ray.get(getattr(self._actor, method).remote(*args))
        except RayActorError:
            if method == "drop" or any(isinstance(a, Kept) for a in args):
                raise
            time.sleep(1.0)  # let Ray free the retired host's name
            self._actor = self._connect()
            return ray.get(getattr(self._actor, method).remote(*args))


def code_version() -> str:
    """The host runs Daft steps of the silver flow: their code and the engine's versions."""
    import flows.silver
    import tasks.scans
    import tasks.settings
    import tasks.silver_jobs
    import tasks.transforms.contract
    import tasks.transforms.silver

    # the steps (silver_jobs) and the Settings they receive: a host of older code can't read new fields
    modules = [__file__, warm_actors.__file__, flows.silver.__file__, tasks.scans.__file__,
               tasks.silver_jobs.__file__, tasks.settings.__file__,
               tasks.transforms.silver.__file__, tasks.transforms.contract.__file__]
    return warm_actors.code_version(modules, ["daft", "pyiceberg", "pyarrow", "ray"])


def daft_jobs(settings: Settings, runner: str):
    """This lakehouse's warm ``DaftHost`` when ``runner`` (from ``tasks.compute.use_ray``) is a
    Ray cluster, else this process. A host runs one call at a time."""
    if not (settings.ray_address and runner == f"ray:{settings.ray_address}"):
        return LocalDaft()
    version = code_version()
    warm_actors.retire_stale(NAME_PREFIX, keep=f"{NAME_PREFIX}{version}")
    # one host per lakehouse: a long promotion of one catalog never queues another's
    name = f"{NAME_PREFIX}{version}-{settings.catalog_tag}"
    return RemoteDaft(lambda: warm_actors.warm_actor(DaftHost, name, settings.daft_host_idle_seconds))
