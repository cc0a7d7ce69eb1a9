"""infra.sockets lists every listening socket of a process tree from /proc, and `stack status`
fails a service that listens anywhere but loopback. The truth is what the child processes say
they bound, never what the module under test reads."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infra.process import PidFile, spawn, stop_session
from infra.services import Service
from infra.sockets import Listener, decode_address, listeners, parse_table, process_tree
from infra.stack import Stack
from tasks.settings import load_settings

# Binds what argv[1] asks for, starts a grandchild (its own child) and a daemon (orphaned: its
# parent exits, so it is in the tree only by session), and prints one JSON line:
# {"pid": ..., "expected": [[pid, proto, host, port], ...], "grandchild": pid, "daemon": pid}.
CHILD = textwrap.dedent('''
    import json, os, socket, subprocess, sys, time

    keep = []

    def bound(family, kind, host):
        sock = socket.socket(family, kind)
        sock.bind((host, 0))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        keep.append(sock)
        return sock, sock.getsockname()[1]

    SOCKETS = """
    import json, os, socket, sys, time
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print(json.dumps([os.getpid(), "tcp", "127.0.0.1", sock.getsockname()[1]]), flush=True)
    time.sleep(600)
    """
    DAEMON = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1]])"

    pid = os.getpid()
    expected = []
    if sys.argv[1] == "with-wildcard":
        expected.append([pid, "tcp", "0.0.0.0", bound(socket.AF_INET, socket.SOCK_STREAM, "0.0.0.0")[1]])
    server, port = bound(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1")
    expected.append([pid, "tcp", "127.0.0.1", port])
    try:
        expected.append([pid, "tcp6", "::1", bound(socket.AF_INET6, socket.SOCK_STREAM, "::1")[1]])
    except OSError:
        pass  # no IPv6 on this host
    udp, udp_port = bound(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1")
    expected.append([pid, "udp", "127.0.0.1", udp_port])
    # Not listeners: a connected UDP socket, both ends of a TCP connection, a Unix socket.
    connected, _ = bound(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1")
    connected.connect(("127.0.0.1", udp_port))
    keep.append(socket.create_connection(("127.0.0.1", port)))
    keep.append(server.accept()[0])
    keep.extend(socket.socketpair(socket.AF_UNIX))

    grandchild = subprocess.Popen([sys.executable, "-c", SOCKETS], stdout=subprocess.PIPE, text=True)
    expected.append(json.loads(grandchild.stdout.readline()))
    middle = subprocess.Popen([sys.executable, "-c", DAEMON, SOCKETS], stdout=subprocess.PIPE, text=True)
    daemon = json.loads(middle.stdout.readline())
    middle.wait()
    expected.append(daemon)
    print(json.dumps({"pid": pid, "expected": expected, "grandchild": grandchild.pid, "daemon": daemon[0]}), flush=True)
    time.sleep(600)
''')


def _start(tmp_path: Path, mode: str, pid_file: PidFile | None = None) -> dict:
    """The child in a session of its own, as `stack up` starts a service; what it printed."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    log = tmp_path / f"child-{mode}.log"
    pid_file = pid_file or PidFile(tmp_path / f"child-{mode}.pid")
    pid = spawn([sys.executable, str(script), mode], dict(os.environ), log, pid_file)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        if lines:
            return json.loads(lines[-1])
        if pid_file.live_pid() is None:
            break
        time.sleep(0.05)
    stop_session(pid, timeout=5)
    raise AssertionError(f"the child printed nothing: {log.read_text()}")


def _as_tuples(found: list[Listener]) -> set[tuple]:
    return {(item.pid, item.proto, item.host, item.port) for item in found}


@pytest.fixture
def wildcard_child(tmp_path):
    child = _start(tmp_path, "with-wildcard")
    yield child
    stop_session(child["pid"], timeout=5)


def test_lists_exactly_the_tree_listeners_and_flags_only_the_wildcard(wildcard_child):
    child = wildcard_child
    tree = process_tree(child["pid"])
    assert tree[0] == child["pid"]
    assert {child["grandchild"], child["daemon"]} <= set(tree)

    found = listeners(tree)
    assert _as_tuples(found) == {tuple(entry) for entry in child["expected"]}
    wildcard = [e for e in child["expected"] if e[2] == "0.0.0.0"]
    assert _as_tuples([item for item in found if not item.loopback]) == {tuple(wildcard[0])}
    assert all(item.command.startswith("python") for item in found)


def test_a_pid_that_leads_no_session_brings_only_its_own_tree(wildcard_child):
    grandchild = wildcard_child["grandchild"]
    assert process_tree(grandchild) == [grandchild]
    assert {item.pid for item in listeners([grandchild])} == {grandchild}


@pytest.mark.skipif(sys.byteorder != "little", reason="the hand-written lines are little-endian /proc text")
def test_decodes_proc_net_lines():
    assert decode_address("0100007F:1F90") == ("127.0.0.1", 8080)
    assert decode_address("020200C0:0050") == ("192.0.2.2", 80)
    assert decode_address("00000000000000000000000001000000:0016") == ("::1", 22)
    assert decode_address("0000000000000000FFFF00000100007F:2382") == ("::ffff:127.0.0.1", 9090)
    assert decode_address("B80D0120000000000000000001000000:01BB") == ("2001:db8::1", 443)

    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    tcp = header + "\n".join([
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 101 1 0 100 0 0 10 0",
        "   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 102 1 0 100 0 0 10 0",
        "   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 103 1 0 20 4 30 10 -1",
        "   3: 0100007F:1F90 0100007F:D432 06 00000000:00000000 03:00000A2B 00000000     0        0 0 3 0",
    ])
    assert parse_table(tcp, "tcp") == {"101": ("127.0.0.1", 8080), "102": ("0.0.0.0", 8081)}

    tcp6 = header + "\n".join([
        "   0: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000  1000        0 201 1 0 100 0 0 10 0",
        "   1: 0000000000000000FFFF00000100007F:2382 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000  1000        0 202 1 0 100 0 0 10 0",
    ])
    assert parse_table(tcp6, "tcp6") == {"201": ("::", 6379), "202": ("::ffff:127.0.0.1", 9090)}

    udp = header + "\n".join([
        "  10: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 301 2 0 0",
        "  11: 0F02000A:A2C4 08080808:0035 01 00000000:00000000 00:00000000 00000000  1000        0 302 2 0 0",
        "  12: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 303 2 0 0",
    ])
    assert parse_table(udp, "udp") == {"301": ("127.0.0.1", 5353), "303": ("0.0.0.0", 68)}


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False), ("2001:db8::1", False),
])
def test_loopback(host, loopback):
    listener = Listener(1, "x", "tcp6" if ":" in host else "tcp", host, 80)
    assert listener.loopback is loopback
    assert listener.address == (f"[{host}]:80" if ":" in host else f"{host}:80")


# ---- `stack status` --------------------------------------------------------------------------

class FakeService(Service):
    """A 'service' whose pid file points at the child: its health is fine, only its sockets vary."""

    name = "fake"

    def address(self) -> str:
        return "127.0.0.1:0"

    def ports(self) -> dict[int, str]:
        return {}

    def check_health(self) -> str | None:
        return None


@pytest.fixture
def settings(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    return load_settings(state_dir=str(tmp_path / "state"))


@pytest.mark.parametrize("mode", ["with-wildcard", "loopback-only"])
def test_status_fails_a_service_with_a_non_loopback_listener(settings, tmp_path, mode):
    service = FakeService(settings)
    child = _start(tmp_path, mode, PidFile(service.pid_path))
    try:
        [status] = Stack(settings, [service]).status()
        relaxed = Stack(settings.model_copy(update={"stack_allow_remote_bind": True}), [service]).status()[0]
    finally:
        stop_session(child["pid"], timeout=5)

    line = status.line()
    assert status.pid == child["pid"] and "\n" not in line
    for _, proto, host, port in child["expected"]:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        assert address + ("/udp" if proto == "udp" else "") in status.listens
    assert "listens=" in line and ",".join(status.listens) in line
    if mode == "with-wildcard":
        wildcard = next(e for e in child["expected"] if e[2] == "0.0.0.0")
        assert not status.healthy and "UNHEALTHY" in line
        # e.g. "listens on 0.0.0.0:41234 (pid 123 python3): not loopback"
        assert status.problem.startswith(f"listens on 0.0.0.0:{wildcard[3]} (pid {child['pid']} python")
        assert status.problem.endswith("): not loopback") and status.problem.count("0.0.0.0") == 1
        assert relaxed.healthy and not relaxed.problem  # stack_allow_remote_bind lets it pass
    else:
        assert status.healthy and not status.problem and "UNHEALTHY" not in line
        assert relaxed.healthy
