"""Where Daft runs: on the Ray head of the stack, on Ray in-process, or on Daft's native runner.

The same job code runs on a laptop and on a Ray cluster; only this switch differs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

from tasks.settings import Settings

_configured: str | None = None
_daft_started = False  # start_daft_workers ran its job in this process


def ray_temp_root(settings: Settings) -> Path:
    """Ray's RAY_TMPDIR: Ray keeps its sessions in ``<root>/ray`` and makes them world-writable,
    so the root is a 0700 folder of the state folder. Ray's Unix sockets live a session path
    below it and a socket path may not exceed 107 bytes, so a long state path (a test's tmp
    folder) uses a short private folder under /tmp named after it instead."""
    root = settings.state_dir / "run"
    if len(str(root)) > 40:
        digest = hashlib.sha256(str(settings.state_dir).encode()).hexdigest()[:10]
        root = Path("/tmp") / f"lakehouse-{os.getuid()}-{digest}"
    return root


def ray_client_env(settings: Settings, create: bool = False) -> dict[str, str]:
    """Ray's environment, the same for the head, the in-process cluster and every client.

    - RAY_AUTH_MODE and the token file: token auth in both profiles;
    - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray otherwise swaps 127.0.0.1 for the machine's
      routable address and opens the GCS, raylet and every worker's port on it
      (``ray._private.services.get_node_ip_address``). Only ``stack_allow_remote_bind`` turns
      it back on;
    - RAY_TMPDIR (``ray_temp_root``);
    - RAY_ENABLE_UV_RUN_RUNTIME_ENV=0 on one machine: a driver under `uv run` (a CLI command, the
      tests) otherwise makes Ray start each of its job's workers through `uv run` in a copy of the
      project (a venv of its own, and 2–4 s of CPU for uv's check per worker), where the head's own
      workers already run in this project's environment. Only ``stack_allow_remote_bind`` (other
      nodes, which need the environment shipped) keeps Ray's default.
    ``create``: make the private folders and the token if missing (the head, the in-process
    cluster), where a client only points at them."""
    from tasks.stack_secrets import private_folder, ray_token_path, write_private

    root = ray_temp_root(settings)
    env = {
        "RAY_AUTH_MODE": settings.ray_auth_mode,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1" if settings.stack_allow_remote_bind else "0",
        "RAY_TMPDIR": str(root),
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "1" if settings.stack_allow_remote_bind else "0",
    }
    if create:
        private_folder(root)
    if settings.ray_auth_mode == "token":
        token = ray_token_path(settings.state_dir)
        if create and not token.exists():
            write_private(token, secrets.token_hex(32))
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return env


def use_ray(settings: Settings) -> str:
    """Point Daft at Ray once per process: ``auto`` joins the head, empty starts Ray in-process.

    Returns the runner in use. Daft allows the runner to be set only once per process, so a
    second call is a no-op.
    """
    global _configured
    if _configured is not None:
        return _configured
    os.environ.update(ray_client_env(settings, create=not settings.ray_address))  # before ray is imported: it reads them once
    import daft
    import ray
    import ray._private.ray_constants as ray_constants

    # already imported (a test session, a notebook): the constants it read at import
    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] == "1"

    if settings.ray_address:
        ray.init(address=settings.ray_address, ignore_reinit_error=True, log_to_driver=False)
        target = f"ray:{settings.ray_address}"
    else:
        # address="local": always a fresh in-process cluster, never a head that happens to run here
        ray.init(address="local", ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 num_cpus=os.cpu_count() or 2, object_store_memory=settings.ray_object_store_mb * 1024 * 1024)
        target = "ray:in-process"
    try:
        daft.set_runner_ray(address=settings.ray_address or None)
        _configured = target
    except Exception as exc:  # noqa: BLE001 - Daft raises a core error type
        if "more than once" not in str(exc):
            raise
        # Daft already ran in this process (a test session, a notebook): it keeps its runner,
        # and only the Ray tasks of this module (the Kafka readers) use the cluster.
        logging.getLogger(__name__).warning("Daft's runner was already set in this process; keeping it")
        _configured = f"{daft.get_or_infer_runner_type()} (Ray for tasks: {target})"
    return _configured


def start_daft_workers() -> None:
    """Run a one-row Daft job now, once per process. On Ray, a driver's first Daft job starts
    Daft's actors (about 3 s on two cores), so a flow calls this while its planning task reads
    metadata rather than paying it inside its first real job. Later flows of a long-lived process
    (continuous mode) find the actors up: another job would only add a Ray job's overhead, which
    measured 2–3 s per gold build on a loaded box."""
    global _daft_started
    if _daft_started:
        return
    import daft

    daft.from_pydict({"warm": [1]}).select(daft.col("warm") + 1).to_pydict()
    _daft_started = True


def plan_while_ray_starts(settings: Settings, plan_task, *args, daft_workers: bool = True):
    """``plan_task(*args)``, with the cluster joined (and Daft's actors started) meanwhile.

    On a Ray cluster both take a second or more, so the Prefect task is submitted to a thread
    while this thread connects. In-process Ray costs seconds to start, so it is left to the flow
    to start only once the plan says there is work.
    """
    if not settings.ray_address:
        return plan_task(*args)
    planned = plan_task.submit(*args)
    use_ray(settings)
    if daft_workers:
        start_daft_workers()
    return planned.result()


def map_on_ray(fn, items: list, *args, num_cpus: float = 0.25) -> list:
    """Run ``fn(item, *args)`` for every item as Ray tasks and return results in item order.

    Fractional CPUs: the Kafka readers mostly wait on the network, so all partitions run at once.
    """
    import ray

    if not items:
        return []
    remote = ray.remote(num_cpus=num_cpus, max_retries=0)(fn)
    shared = [ray.put(a) for a in args] if args else []
    return ray.get([remote.remote(item, *shared) for item in items])
