"""The listening sockets of a set of processes, read from /proc (no external tools, no psutil).

Used by ``lakehouse stack status`` and the tests to prove that every stack process listens on
loopback only. A socket is a *listener* when it is a TCP socket in state LISTEN, or a bound UDP
socket with no remote address (UDP has no listen state, so any unconnected bound socket accepts
datagrams from anywhere it is bound to). Unix sockets are never reported: they are not reachable
from the network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

TCP_LISTEN = "0A"
TABLES = ("tcp", "tcp6", "udp", "udp6")


@dataclass(frozen=True)
class Listener:
    pid: int
    command: str  # /proc/<pid>/comm, e.g. "raylet", "java"
    proto: str  # 'tcp' | 'udp' | 'tcp6' | 'udp6'
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """127.0.0.0/8, ::1 or an IPv4-mapped 127.x: reachable from this host only."""
        address = ipaddress.ip_address(self.host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    @property
    def address(self) -> str:
        """``host:port``, IPv6 in brackets, ``/udp`` appended for UDP."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + ("/udp" if self.proto.startswith("udp") else "")

    def __str__(self) -> str:
        return f"{self.address} (pid {self.pid} {self.command})"


def decode_address(hex_address: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ``('127.0.0.1', 8080)``.

    The kernel prints each 32-bit word of the address as a host-order integer (so reversed bytes
    on little-endian machines); IPv6 is four such words. The port is plain big-endian hex.
    """
    hex_host, hex_port = hex_address.split(":")
    raw = b"".join(struct.pack("=I", int(hex_host[i:i + 8], 16)) for i in range(0, len(hex_host), 8))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    address = ipaddress.ip_address(socket.inet_ntop(family, raw))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}", int(hex_port, 16)  # as 3.13+ prints it
    return str(address), int(hex_port, 16)


def parse_table(text: str, proto: str) -> dict[str, tuple[str, int]]:
    """Listening sockets of one /proc/net/{tcp,tcp6,udp,udp6} table: inode -> (host, port)."""
    found: dict[str, tuple[str, int]] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
        if inode == "0":
            continue  # e.g. a TIME_WAIT entry: no socket behind it any more
        if proto.startswith("tcp"):
            if state != TCP_LISTEN:
                continue
        else:
            remote_host, remote_port = decode_address(remote)
            if remote_port != 0 or not ipaddress.ip_address(remote_host).is_unspecified:
                continue  # a connected UDP socket (e.g. a DNS query), not listening
        host, port = decode_address(local)
        if port == 0:
            continue
        found[inode] = (host, port)
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None


def _socket_inodes(pid: int) -> set[str] | None:
    """Inodes of the sockets open in ``pid`` (threads share the fd table), None if unreadable."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    return inodes


def listeners(pids: Iterable[int]) -> list[Listener]:
    """Every TCP/UDP listener owned by ``pids``, one per socket, sorted by pid and port.

    A socket shared by several processes (an inherited fd) is reported once, for the lowest pid.
    Processes that exited or may not be read are skipped. The socket tables are read per network
    namespace, from the process's own /proc/<pid>/net, so a process in another namespace is
    still seen correctly.
    """
    tables: dict[str, dict[str, tuple[str, str, int]]] = {}  # netns -> inode -> (proto, host, port)
    seen: set[str] = set()
    out: list[Listener] = []
    for pid in sorted(set(pids)):
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        try:
            netns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            netns = "?"
        if netns not in tables:
            table: dict[str, tuple[str, str, int]] = {}
            for proto in TABLES:
                text = _read(Path(f"/proc/{pid}/net/{proto}"))
                if text:
                    for inode, (host, port) in parse_table(text, proto).items():
                        table[inode] = (proto, host, port)
            tables[netns] = table
        command = (_read(Path(f"/proc/{pid}/comm")) or "?").strip()
        for inode in sorted(inodes & tables[netns].keys() - seen):
            seen.add(inode)
            proto, host, port = tables[netns][inode]
            out.append(Listener(pid, command, proto, host, port))
    return sorted(out, key=lambda item: (item.pid, item.port, item.proto, item.host))


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies have no sockets left)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        raw = _read(entry / "stat")
        if not raw:
            continue
        fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces or ')'
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(pid: int) -> list[int]:
    """``pid``, its descendants, and every process of the session ``pid`` leads (with theirs).

    Each stack service runs in its own session whose id is the service's pid, so the session
    catches children that were re-parented to init when they daemonised (Ray's raylet and
    workers). A pid that leads no session has no session members, so an ordinary child never
    drags in its parent's session. ``pid`` itself is listed first while it is alive.
    """
    from infra.process import session_members

    parents = _parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    roots = [pid, *session_members(pid)]
    found: set[int] = set()
    stack = list(roots)
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.add(current)
        stack.extend(children.get(current, ()))
    found &= parents.keys()  # only live processes
    return sorted(found, key=lambda p: (p != pid, p))
