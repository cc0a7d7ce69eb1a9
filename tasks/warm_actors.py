"""Long-lived Ray actors that stay warm between flow runs, and retire when idle or outdated.

A Ray worker belongs to one job, and every flow run is a new job: work done in plain Ray tasks
pays worker start and imports (seconds on two cores) in every run. A detached, named actor in
the ``lakehouse`` namespace survives its creator and is found by name by the next run. Its name
carries a hash of the code it runs, so new code gets new actors and the old ones are retired;
an actor idle for ``idle_seconds`` exits on its own, which frees its memory.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

NAMESPACE = "lakehouse"


def release_memory() -> None:
    """Give freed Arrow and malloc memory back to the OS, so an idle actor stays small."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps it, which is only wasteful
        pass


class WarmActor:
    """Base of an actor that retires after ``idle_seconds`` unused; subclasses call ``used()``
    when a call ends."""

    def __init__(self, idle_seconds: float):
        self._idle_seconds = idle_seconds
        self._last_used = time.monotonic()
        threading.Thread(target=self._watch_idle, daemon=True).start()

    def used(self) -> None:
        release_memory()
        self._last_used = time.monotonic()

    def retire_if_idle(self) -> None:
        """Runs between calls (one at a time per actor), so it never cuts a call short."""
        import ray

        if time.monotonic() - self._last_used >= self._idle_seconds:
            ray.actor.exit_actor()  # an intended exit: Ray frees the name for the next run's actor

    def retire(self) -> None:
        """Exit now: another code version took over. Queued behind the actor's calls, so it
        never cuts one short; a run that comes back to this name gets a new actor."""
        import ray

        ray.actor.exit_actor()

    def _watch_idle(self) -> None:
        import ray

        me = ray.get_runtime_context().current_actor
        while True:
            time.sleep(min(30.0, self._idle_seconds))
            if time.monotonic() - self._last_used >= self._idle_seconds:
                me.retire_if_idle.remote()


def code_version(module_files: list[str], packages: list[str]) -> str:
    """A hash of the code an actor runs (its modules' bytes and where they live, and the versions
    of the packages it uses): actors of other code are never used."""
    from importlib.metadata import version

    digest = hashlib.sha256(" ".join(f"{p}={version(p)}" for p in packages).encode())
    for module_file in module_files:
        digest.update(module_file.encode())
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()[:12]


def warm_actor(actor_class, name: str, idle_seconds: float, concurrency: int = 1, **options):
    """The detached actor ``name`` of ``actor_class(idle_seconds)``, created on first use."""
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=concurrency)(actor_class)
    return actor.options(name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                         **options).remote(idle_seconds)


def retire_stale(prefix: str, keep: str | None, wait_seconds: float = 0.0) -> None:
    """Ask the actors named ``prefix``… but not ``keep``… (``keep`` = prefix + code version;
    None: all of them) to retire once their current calls are done, waiting up to ``wait_seconds``
    for them to be gone. Never ``ray.kill``: another
    checkout or an older deployment may be in the middle of a run on them (two code versions
    share a cluster during a rolling upgrade), and killing its actor fails that run."""
    import ray

    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = entry["name"], entry["namespace"]
        if namespace == NAMESPACE and name.startswith(prefix) and not (keep and name.startswith(keep)):
            try:
                ray.get_actor(name, namespace=namespace).retire.remote()
            except ValueError:  # gone already
                pass
    deadline = time.monotonic() + wait_seconds  # a benchmark that wants them gone waits
    while time.monotonic() < deadline and any(
            e["namespace"] == NAMESPACE and e["name"].startswith(prefix) and not (keep and e["name"].startswith(keep))
            for e in ray.util.list_named_actors(all_namespaces=True)):
        time.sleep(0.2)
