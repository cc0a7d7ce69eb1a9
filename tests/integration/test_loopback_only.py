"""Every socket of every stack process, and of the embedded profile's in-process Ray, listens on
loopback (or is a Unix socket, or is not opened at all). The process trees are walked from /proc
(infra.sockets), so a daemonised child such as Ray's raylet or a Ray worker is checked too."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time

import pytest

from infra.process import PidFile, stop_session
from infra.services import all_services
from infra.sockets import Listener, listeners, process_tree
from tests.conftest import ROOT

pytestmark = pytest.mark.stack


def _table(rows: list[tuple[str, Listener]]) -> str:
    """One line per listener, non-loopback ones marked, for the failure message."""
    return "\n".join(f"  {'ok ' if item.loopback else 'BAD'} {name:<15} {item.proto:<5} {item}"
                     for name, item in rows)


def test_every_stack_process_listens_on_loopback_only(stack_settings):
    rows: list[tuple[str, Listener]] = []
    for service in all_services(stack_settings):
        pid = PidFile(service.pid_path).live_pid()
        assert pid is not None, f"{service.name} is not running"
        found = listeners(process_tree(pid))
        rows += [(service.name, item) for item in found]
        if service.ports():
            assert found, f"{service.name} (pid {pid}) has no listening socket at all"
            assert {item.port for item in found} & set(service.ports()), (
                f"{service.name} listens on none of its ports {sorted(service.ports())}:\n{_table(rows)}")
    print("\n" + _table(rows))
    remote = [(name, item) for name, item in rows if not item.loopback]
    assert not remote, f"{len(remote)} of {len(rows)} listeners are not on loopback:\n{_table(rows)}"


# The embedded profile's driver: in-process Ray (tasks.compute.use_ray), one task, then its pid;
# it stays up until its stdin closes, so the parent can read the sockets of it and its Ray processes.
EMBEDDED_DRIVER = textwrap.dedent("""
    import os, sys

    from tasks.compute import use_ray
    from tasks.settings import load_settings

    settings = load_settings()
    assert settings.profile == "embedded" and not settings.ray_address, settings.ray_address
    use_ray(settings)  # before ray is imported here: ray reads its environment once, on import

    import ray

    @ray.remote
    def one():
        return 1

    assert ray.get(one.remote()) == 1
    print(os.getpid(), flush=True)
    sys.stdin.read()
""")
DRIVER_START_S = 180.0


def test_embedded_in_process_ray_listens_on_loopback_only(tmp_path):
    # The embedded profile's own environment: no stack config, no Ray head to join, no head token.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LAKEHOUSE_", "RAY_AUTH_")) and k != "RAY_ADDRESS"}
    env.update({"LAKEHOUSE_PROFILE": "embedded", "LAKEHOUSE_STATE_DIR": str(tmp_path / "state"),
                "LAKEHOUSE_RAY_OBJECT_STORE_MB": "128"})
    log = tmp_path / "driver.log"
    with open(log, "wb") as err:
        driver = subprocess.Popen([sys.executable, "-c", EMBEDDED_DRIVER], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    try:
        ready, _, _ = select.select([driver.stdout], [], [], DRIVER_START_S)
        line = driver.stdout.readline().decode().strip() if ready else ""
        assert line.isdigit(), (f"the embedded driver did not start Ray and run a task "
                                f"(exit {driver.poll()}): {log.read_text(errors='replace')[-3000:]}")
        pid = int(line)
        assert pid == driver.pid
        tree = process_tree(pid)
        rows = [("embedded-ray", item) for item in listeners(tree)]
        print(f"\n{len(tree)} processes in the driver's tree:\n" + _table(rows))
        assert len(tree) > 1, "in-process Ray started no processes of its own?"
        remote = [item for _, item in rows if not item.loopback]
        assert not remote, f"{len(remote)} of {len(rows)} listeners are not on loopback:\n{_table(rows)}"
    finally:
        driver.stdin.close()  # the driver exits and shuts its Ray down
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        stop_session(driver.pid, timeout=10)  # whatever of its session is left (raylet, workers)
        deadline = time.monotonic() + 5
        while driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
