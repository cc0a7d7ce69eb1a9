"""A figure sampled on a background thread while a benchmark step runs: the memory samplers of
the benchmarks share this loop and differ only in what ``sample`` reads, and read /proc through
the readers below (the process table, a process's memory, its Ray job, the Ray workers)."""

from __future__ import annotations

import os
import re
import threading
import time


class PeriodicSampler:
    """``with sampler: ...`` calls ``sample()`` every ``interval`` seconds until the block ends."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def sample(self) -> None:
        raise NotImplementedError


def mb(n: float | int | None) -> float | None:
    """Bytes as MiB with one decimal, as every benchmark's JSON reports memory; None stays None."""
    return None if n is None else round(n / 1024**2, 1)


# ---- /proc: the process table, a process's memory and its Ray job ---------------------------------------

KB = 1024
RAYLET_NODE = re.compile(r"--node_id=([0-9a-f]+)")
STATUS_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def read_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (0: state, 1: ppid, 11-14: utime,
    stime, cutime, cstime in clock ticks), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def read_processes() -> dict[int, tuple[int, str]]:
    """Every process now: pid -> (ppid, command line)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = read_stat(int(entry))
            if stat is None:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                out[int(entry)] = (int(stat[1]), f.read().replace(b"\0", b" ").decode(errors="replace").strip())
        except (OSError, IndexError, ValueError):
            continue
    return out


def read_status(pid: int) -> dict[str, int] | None:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process in bytes (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            out = {}
            for line in f:
                key, _, rest = line.partition(":")
                if key in STATUS_KEYS:
                    out[key] = int(rest.split()[0]) * KB
            return out
    except OSError:
        return None


def job_of(pid: int) -> str | None:
    """The Ray job a worker works for (RAY_JOB_ID in its environment), if any."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"RAY_JOB_ID="):
                    return item.split(b"=", 1)[1].decode()
    except OSError:
        pass
    return None


def process_tree(root: int, procs: dict[int, tuple[int, str]]) -> list[int]:
    """``root`` and all its descendants present in ``procs`` (pid -> (ppid, cmdline))."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            tree.append(pid)
            todo.extend(children.get(pid, []))
    return tree


def is_ray_worker(cmd: str) -> bool:
    """A worker's command line: titled ``ray::...`` or still ``default_worker.py``; not an agent,
    the dashboard or the runtime env's ``uv run`` wrapper around a worker."""
    if "Agent" in cmd or "/agent.py" in cmd or "dashboard" in cmd:
        return False
    first = cmd.split(" ", 1)[0]
    if os.path.basename(first) == "uv":
        return False
    return cmd.startswith("ray::") or "default_worker.py" in cmd


def ray_workers(procs: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Ray worker pids -> the node id of the raylet they descend from (at any depth: under the
    runtime env's ``uv run`` the raylet's child is uv and the worker its child)."""
    raylets = {pid: m.group(1) for pid, (_, cmd) in procs.items()
               if "raylet" in cmd.split(" ", 1)[0] and (m := RAYLET_NODE.search(cmd))}
    out = {}
    for pid, (ppid, cmd) in procs.items():
        if pid in raylets or not is_ray_worker(cmd):
            continue
        seen, up = set(), ppid
        while up in procs and up not in raylets and up not in seen:
            seen.add(up)
            up = procs[up][0]
        if up in raylets:
            out[pid] = raylets[up]
    return out
