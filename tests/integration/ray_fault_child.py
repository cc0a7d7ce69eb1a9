"""A flow run in a process of its own, with a Ray fault injected at a named point; used by
test_ray_faults.py. Ray ends a driver whose head went away, so the test process stays out of it.

    python -m tests.integration.ray_fault_child CASE

The private lakehouse comes from the LAKEHOUSE_* environment. Prints ``fired`` when the fault
was injected; the exit code is the flow's (a fault may or may not fail the run)."""

from __future__ import annotations

import sys
import threading

from infra.stack import Stack
from tasks.settings import load_settings
from tests.conftest import ROOT, STACK_CONFIG


def _kill_named(prefix: str) -> bool:
    import ray

    from tasks.warm_actors import NAMESPACE

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == NAMESPACE and entry["name"].startswith(prefix):
            ray.kill(ray.get_actor(entry["name"], namespace=NAMESPACE), no_restart=True)
            return True
    return False


def main(case: str) -> int:
    settings = load_settings()
    stack = Stack(load_settings(STACK_CONFIG, state_dir=str(ROOT / ".lakehouse")))

    def fired():
        print("fired", flush=True)

    if case == "head-during-silver":
        import flows.silver as silver

        def at(stage, crash_at):
            if stage == "read":
                fired()
                stack.down(["ray"])
                threading.Timer(3.0, lambda: stack.up(["ray"])).start()

        silver.crash_if = at
        run = lambda: silver.silver_flow(settings=settings)  # noqa: E731
    elif case == "host-during-silver":
        import flows.silver as silver
        from tasks.daft_host import NAME_PREFIX, code_version

        def at(stage, crash_at):  # this lakehouse's own host
            if stage == "read" and _kill_named(f"{NAME_PREFIX}{code_version()}-{settings.catalog_tag}"):
                fired()

        silver.crash_if = at
        run = lambda: silver.silver_flow(settings=settings)  # noqa: E731
    elif case == "writer-during-ingest":
        import flows.ingest as ingest
        from tasks.bronze_writers import NAME_PREFIX
        from tasks.bronze_writers import code_version as writers_version

        original = ingest.write_ranges

        def write_ranges(*args, **kwargs):
            def kill():
                if _kill_named(f"{NAME_PREFIX}{writers_version()}-"):
                    fired()
            threading.Timer(0.3, kill).start()
            return original(*args, **kwargs)

        ingest.write_ranges = write_ranges
        run = lambda: ingest.ingest_flow(settings=settings, max_batches=1)  # noqa: E731
    else:
        raise SystemExit(f"unknown case {case!r}")
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - the test reads the outcome from the exit code
        print(f"failed: {type(exc).__name__}: {exc}"[:500], flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
