"""Start, find and stop the native service processes, by pid file and session.

Each service runs in its own session (``start_new_session``), so its pid is also its session id.
``stop`` signals every process of that session, which catches the children a service spawns
(Ray's raylet and workers, Prefect's services) and nothing that ``up`` did not start.
The pid file also records the process start time, so a recycled pid is never mistaken for ours.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_ticks: int
    command: list[str]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces or parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] == "Z"


def is_running(pid: int) -> bool:
    """A live process, not a zombie waiting to be reaped."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def session_members(sid: int) -> list[int]:
    """Every live process whose session id is ``sid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class PidFile:
    def __init__(self, path: Path):
        self.path = path

    def read(self) -> PidRecord | None:
        try:
            data = json.loads(self.path.read_text())
            return PidRecord(int(data["pid"]), int(data["start_ticks"]), list(data["command"]))
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def write(self, record: PidRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.__dict__))
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def live_pid(self) -> int | None:
        """The recorded pid if that very process (same start time) is still running."""
        record = self.read()
        if record is None:
            return None
        if _start_ticks(record.pid) != record.start_ticks or _is_zombie(record.pid):
            # The leader is gone; its session may still have members (e.g. daemonised children).
            return record.pid if session_members(record.pid) else None
        return record.pid


def spawn(command: list[str], env: dict[str, str], log_path: Path, pid_file: PidFile, cwd: Path | None = None) -> int:
    """Start ``command`` detached in a new session, output appended to ``log_path``.

    umask 077: what a service writes (volume files, Kafka logs, databases, logs) is its owner's only."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {command[0]}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            umask=0o077,
        )
    ticks = _start_ticks(proc.pid) or 0
    pid_file.write(PidRecord(proc.pid, ticks, command))
    return proc.pid


def stop_session(sid: int, timeout: float = 20.0) -> None:
    """SIGTERM every process of the session, then SIGKILL what is left after ``timeout``."""
    def signal_all(sig: int) -> None:
        for pid in session_members(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while session_members(sid) and time.monotonic() < deadline:
        _reap(sid)
        time.sleep(0.2)
    if session_members(sid):
        signal_all(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
    _reap(sid)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def listening_pids(port: int) -> set[int]:
    """Pids with a listening TCP socket on ``port`` (from /proc, no external tools)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    pids = set()
    if not inodes:
        return pids
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    pids.add(int(proc.name))
                    break
        except (FileNotFoundError, PermissionError, ProcessLookupError, NotADirectoryError):
            continue
    return pids
