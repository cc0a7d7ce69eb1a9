"""Where Daft runs: on the Ray head of the stack, on Ray in-process, or on Daft's native runner.

The same job code runs on a laptop and on a Ray cluster; only this switch differs.
"""

from __future__ import annotations

import logging
import os

from tasks.settings import Settings

_configured: str | None = None


def ray_client_env(settings: Settings) -> dict[str, str]:
    """RAY_AUTH_* that must match the head's (see infra/services.ray_env)."""
    env = {"RAY_AUTH_MODE": settings.ray_auth_mode}
    token = settings.state_dir / "run" / "ray-auth-token"
    if settings.ray_auth_mode == "token" and token.exists():
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
    if settings.ray_address:
        os.environ.update(ray_client_env(settings))  # before ray is imported: it reads them once
    import daft
    import ray

    if settings.ray_address:
        ray.init(address=settings.ray_address, ignore_reinit_error=True, log_to_driver=False)
        target = f"ray:{settings.ray_address}"
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
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
    """Run a one-row Daft job now. On Ray, a driver's first Daft job starts Daft's actors (about
    3 s on two cores), so a flow calls this while its planning task reads metadata rather than
    paying it inside its first real job."""
    import daft

    daft.from_pydict({"warm": [1]}).select(daft.col("warm") + 1).to_pydict()


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
