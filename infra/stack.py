"""``lakehouse stack up | down | status``: the local stack as native processes on loopback."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from infra.process import PidFile, listening_pids, port_in_use, spawn, stop_session
from infra.services import BuildError, Service, all_services
from infra.sockets import Listener, listeners, process_tree
from tasks.settings import Settings, SettingsError

Reporter = Callable[[str, str], None]  # (service name, message)

HEALTH_TIMEOUT_S = 240.0


class StackError(RuntimeError):
    """A service did not come up; the message names it and points at its log."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    pid: int | None
    healthy: bool
    problem: str = ""
    listens: tuple[str, ...] = ()  # every listening address of the service's processes

    def line(self) -> str:
        """One line per service (scripts split on it): the addresses it listens on come last."""
        state = "healthy" if self.healthy else "UNHEALTHY"
        pid = str(self.pid) if self.pid else "-"
        tail = f"  {self.problem}" if self.problem else ""
        listens = f"  listens={','.join(self.listens)}" if self.listens else ""
        return f"{self.name:<13} {self.address:<16} pid={pid:<8} {state}{tail}{listens}"


def _quiet(name: str, message: str) -> None:
    pass


class Stack:
    def __init__(self, settings: Settings, services: list[Service] | None = None):
        self.settings = settings
        self.services = services if services is not None else all_services(settings)

    def select(self, names: list[str] | None) -> list[Service]:
        if not names:
            return self.services
        known = {s.name: s for s in self.services}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SettingsError("service", f"unknown service {unknown[0]!r}; expected one of {sorted(known)}")
        return [s for s in self.services if s.name in names]

    # -- up ------------------------------------------------------------------------------------
    def up(self, names: list[str] | None = None, report: Reporter = _quiet) -> dict[str, float]:
        """Start what is not running, wait for real health, provision. Idempotent.

        Returns the seconds each service took, for the start-up benchmark.
        """
        from tasks.stack_secrets import private_folder

        timings: dict[str, float] = {}
        for service in self.select(names):
            check_bind_host(service, self.settings)
        private_folder(self.settings.state_dir)  # logs, databases and secrets: the owner's only
        for service in self.select(names):
            began = time.monotonic()
            self._up_one(service, report)
            timings[service.name] = round(time.monotonic() - began, 2)
        return timings

    def _up_one(self, service: Service, report: Reporter) -> None:
        pid_file = PidFile(service.pid_path)
        pid = pid_file.live_pid()
        started_with = service.pid_path.with_suffix(".settings")
        wanted = service.settings_fingerprint()
        if pid is not None and wanted and (not started_with.exists() or started_with.read_text() != wanted):
            report(service.name, "restarting: it runs with other settings")
            stop_session(pid, timeout=30.0)
            pid = None
        started = None
        if pid is None:
            pid_file.remove()
            self._check_ports_free(service)
            try:
                service.build(lambda msg: report(service.name, msg))
                report(service.name, "initialising")
                service.initialise()
            except BuildError as exc:
                raise StackError(f"{service.name}: {exc}") from None
            command, env = service.launch()
            report(service.name, "starting")
            service.data_dir.mkdir(parents=True, exist_ok=True)
            started = datetime.now(timezone.utc)
            pid = spawn(command, env, service.log_path, pid_file, cwd=service.data_dir)
            started_with.write_text(wanted)
        report(service.name, "waiting for health")
        self._wait_healthy(service, pid_file)
        created = service.provision()
        notes = [f"created {', '.join(created)}"] if created else []
        if started is not None:
            notes += service.recover(started)
        report(service.name, "; ".join(["healthy", *notes]))

    def _check_ports_free(self, service: Service) -> None:
        for port, key in service.ports().items():
            if port_in_use("127.0.0.1", port):
                owners = ",".join(str(p) for p in sorted(listening_pids(port))) or "unknown"
                raise SettingsError(
                    key, f"port {port} on 127.0.0.1 is already taken by another process (pid {owners}), not one lakehouse started"
                )

    def _wait_healthy(self, service: Service, pid_file: PidFile) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        problem = "not checked yet"
        while time.monotonic() < deadline:
            if pid_file.live_pid() is None:
                raise StackError(f"{service.name} exited while starting; last log lines:\n{_tail(service)}")
            problem = service.check_health()
            if problem is None:
                return
            time.sleep(1.0)
        raise StackError(f"{service.name} not healthy after {HEALTH_TIMEOUT_S:.0f}s: {problem}; see {service.log_path}")

    def provision(self, names: list[str] | None = None) -> list[str]:
        """Create topics, buckets and namespaces on services someone else runs (e.g. Compose)."""
        created = []
        for service in self.select(names):
            problem = service.check_health()
            if problem is not None:
                raise StackError(f"{service.name} at {service.address()} is not healthy: {problem}")
            created += service.provision()
        return created

    # -- down ----------------------------------------------------------------------------------
    def down(self, names: list[str] | None = None, report: Reporter = _quiet) -> list[str]:
        """Stop what ``up`` started, by pid and session, in reverse order. Returns what it stopped."""
        stopped = []
        for service in reversed(self.select(names)):
            pid_file = PidFile(service.pid_path)
            pid = pid_file.live_pid()
            if pid is not None:
                report(service.name, f"stopping pid {pid}")
                stop_session(pid, timeout=30.0)
                stopped.append(service.name)
            pid_file.remove()
        return stopped

    # -- status --------------------------------------------------------------------------------
    def status(self, names: list[str] | None = None) -> list[ServiceStatus]:
        out = []
        for service in self.select(names):
            pid = PidFile(service.pid_path).live_pid()
            if pid is None:
                taken = [p for p in service.ports() if port_in_use("127.0.0.1", p)]
                problem = "not running" + (f"; port {taken[0]} is held by another process" if taken else "")
                out.append(ServiceStatus(service.name, service.address(), None, False, problem))
                continue
            problem = service.check_health()
            found = listeners(process_tree(pid))
            remote = self._remote_problem(found)
            problems = [p for p in (problem, remote) if p]
            out.append(ServiceStatus(service.name, service.address(), pid, not problems, "; ".join(problems),
                                     _addresses(found)))
        return out

    def _remote_problem(self, found: list[Listener]) -> str | None:
        """Every socket must be on loopback unless ``stack_allow_remote_bind`` says otherwise."""
        remote = [item for item in found if not item.loopback]
        if not remote or self.settings.stack_allow_remote_bind:
            return None
        shown = ", ".join(str(item) for item in remote[:3])
        more = f" and {len(remote) - 3} more" if len(remote) > 3 else ""
        return f"listens on {shown}{more}: not loopback"


def _addresses(found: list[Listener]) -> tuple[str, ...]:
    """Distinct listening addresses, sorted by port (a socket per Ray worker makes many)."""
    unique = {item.address: item.port for item in found}
    return tuple(sorted(unique, key=lambda address: (unique[address], address)))


def is_loopback_host(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_host(service: Service, settings: Settings) -> None:
    """Refuse to start a service on a non-loopback host unless ``stack_allow_remote_bind`` says
    so: several services trust whoever reaches them, and loopback is what keeps others out."""
    ports = service.ports()
    if not ports or settings.stack_allow_remote_bind:
        return
    host = service.address().rpartition(":")[0]
    if not is_loopback_host(host):
        key = next(iter(ports.values()))
        raise SettingsError(key, f"{service.name} would listen on {host}, not loopback; set "
                                 "LAKEHOUSE_STACK_ALLOW_REMOTE_BIND=true to allow it (see the README's security section)")


def _tail(service: Service, lines: int = 15) -> str:
    try:
        return "\n".join(service.log_path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
