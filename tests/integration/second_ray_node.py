"""A second Ray node on this machine, joined to the stack's head, for tests and benchmarks.

``ray start --address=<head> --block`` in a session of its own, with the head's environment
(``infra.services.ray_env``: token auth, loopback only) but a temp folder of its own, ports of its
own from ray_port+300 (the head uses ray_port to ray_port+7 and workers from ray_port+10000), a small object store and one CPU.
Leaving the context ends exactly that session; the head is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tasks.settings import Settings

RESOURCE = "second_node"
# `ray start --address=...` with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the stack's loopback guard)
# refuses to join, and with 1 it swaps 127.0.0.1 for the machine's routable address. So the node
# starts from `ray start` run in-process with the refusal lifted and 127.0.0.1 left as it is; its
# raylet, agents and workers still see 0 and stay on loopback (``listening_addresses`` checks).
JOIN_ON_LOOPBACK = (
    "import sys; import ray._private.ray_constants as c; c.ENABLE_RAY_CLUSTER = True; "
    "import ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)
OFFSET = 300  # clear of the head's ray_port..+7 and ray_port+10000.. (infra.services.ray_ports, ray_worker_ports)
JOIN_SECONDS = 60.0
LEAVE_SECONDS = 60.0


def second_node_ports(settings: Settings) -> dict[str, int]:
    base = settings.ray_port + OFFSET
    flags = ("node-manager-port", "object-manager-port", "dashboard-agent-grpc-port", "dashboard-agent-listen-port",
             "runtime-env-agent-port", "metrics-export-port")
    ports = {flag: base + i for i, flag in enumerate(flags)}
    ports.update({"min-worker-port": base + 20, "max-worker-port": base + 99})
    return ports


def _busy(ports: list[int]) -> list[int]:
    taken = []
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                taken.append(port)
    return taken


def alive_nodes() -> dict[str, dict]:
    """Alive Ray nodes by id (this process must have joined the cluster)."""
    import ray

    return {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}


@dataclass(frozen=True)
class SecondNode:
    node_id: str
    pid: int  # `ray start --block`, the leader of the node's session

    def listeners(self):
        """Every listening socket of the node's processes (raylet, agents, workers)."""
        from infra.sockets import listeners, process_tree

        return listeners(process_tree(self.pid))


@contextlib.contextmanager
def second_node(settings: Settings, log: Path, cpus: int = 1, object_store_mb: int = 200) -> Iterator[SecondNode]:
    """A second node joined to the head at ``settings.ray_port``. This process must already be
    connected to the cluster (``tasks.compute.use_ray``)."""
    from infra.services import ray_env
    from tasks.stack_secrets import private_folder

    ports = second_node_ports(settings)
    fixed = [p for f, p in ports.items() if not f.endswith("worker-port")]
    taken = _busy(fixed + list(range(ports["min-worker-port"], ports["max-worker-port"] + 1)))
    if taken:
        raise RuntimeError(f"ports {taken} are in use: the second Ray node needs ray_port+{OFFSET}..+{OFFSET + 99}")
    # A temp folder of its own: with the head's, both nodes' runtime-env agents share one
    # runtime_resources folder, and this node's agent deletes the job packages (workers' working
    # folders) it unpacked when it is done with them, under the head's workers too.
    temp = Path("/tmp") / f"lakehouse-{os.getuid()}-node-{ports['node-manager-port']}"
    private_folder(temp)
    command = [sys.executable, "-c", JOIN_ON_LOOPBACK, "start", "--block", f"--temp-dir={temp}", f"--address=127.0.0.1:{settings.ray_port}", "--node-ip-address=127.0.0.1",
               *(f"--{flag}={port}" for flag, port in ports.items()),
               f"--num-cpus={cpus}", f"--resources={json.dumps({RESOURCE: 1})}",
               f"--object-store-memory={object_store_mb * 1024 * 1024}", "--disable-usage-stats"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **ray_env(settings),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(temp)}
    before = set(alive_nodes())
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    node_id = None
    try:
        deadline = time.monotonic() + JOIN_SECONDS
        while node_id is None:
            if process.poll() is not None:
                raise RuntimeError(f"the second Ray node exited with {process.returncode}; log: {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the second Ray node did not join within {JOIN_SECONDS:.0f}s; log: {log}")
            joined = [i for i, n in alive_nodes().items() if i not in before and n["Resources"].get(RESOURCE)]
            node_id = joined[0] if joined else None
            time.sleep(0.5)
        yield SecondNode(node_id, process.pid)
    finally:
        _stop(process)
        deadline = time.monotonic() + LEAVE_SECONDS
        while node_id and node_id in alive_nodes() and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(temp, ignore_errors=True)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the node's session (``ray start`` stops its raylet and workers), SIGKILL what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(1.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def daft_workers_cpu(job_id: str | None = None) -> dict[tuple[str, int], float]:
    """CPU seconds so far of each live Daft worker actor (``RaySwordfishActor``) on this machine, by
    (node id, pid); only ``job_id``'s when given. Read from /proc, so both nodes must run here.
    By pid: a worker that exits between two readings must not count as negative work."""
    import ray._private.state as state

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[str, int], float] = {}
    for actor in state.actors().values():
        if actor.get("State") != "ALIVE" or actor.get("ActorClassName") != "RaySwordfishActor":
            continue
        if job_id is not None and actor.get("JobID") != job_id:
            continue
        pid = actor.get("Pid")
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        node = actor["Address"]["NodeID"]
        out[(node, pid)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return out


def cpu_spent_by_node(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]) -> dict[str, float]:
    """CPU seconds the Daft workers of each node spent between two ``daft_workers_cpu`` readings."""
    spent: dict[str, float] = {}
    for (node, pid), seconds in after.items():
        spent[node] = spent.get(node, 0.0) + max(0.0, seconds - before.get((node, pid), 0.0))
    return spent
