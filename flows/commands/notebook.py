"""`lakehouse notebook`: JupyterLab on loopback with a generated token, its kernels wired to the
lakehouse settings, so ``from tasks.notebook_session import sql`` just works in a notebook."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import typer

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
HOST = "127.0.0.1"  # loopback only, like every service of the stack
START_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def jupyter_command(port: int, root: Path) -> list[str]:
    """JupyterLab on ``HOST:port`` only (no other port tried), serving ``root``, no browser, no
    update or news checks (nothing leaves the machine). The token comes from JUPYTER_TOKEN, not
    the command line, which other local users can read in the process list."""
    command = [
        sys.executable, "-m", "jupyterlab",
        f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # containers: JupyterLab refuses root unless told; the lakehouse runs as whoever runs it
        command.append("--ServerApp.allow_root=True")
    return command


def kernel_env(base: dict[str, str], config: Path | None, token: str) -> dict[str, str]:
    """The server's environment, which its kernels inherit: the caller's (``LAKEHOUSE_*``, and the
    Ray and Prefect client variables the command exported), the settings file it was given, and
    the token."""
    env = {**base, "JUPYTER_TOKEN": token}
    if config is not None:
        env["LAKEHOUSE_CONFIG"] = str(Path(config).resolve())
    return env


def _wait_until_serving(process: subprocess.Popen, port: int, token: str, log: Path) -> str | None:
    """None once the server answers an authenticated API call, else what went wrong."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").splitlines()[-5:])
            return f"JupyterLab exited with {process.returncode}: {tail} (log: {log})"
        request = urllib.request.Request(f"http://{HOST}:{port}/api/status",
                                         headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - loopback
                return None
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    return f"JupyterLab did not answer on {HOST}:{port} within {START_SECONDS:.0f}s (log: {log})"


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def notebook_cmd(
    port: int = typer.Option(0, "--port", min=0, max=65535, help="port on 127.0.0.1; 0 = a free one"),
    root: Path = typer.Option(NOTEBOOKS, "--dir", help="the folder JupyterLab serves"),
) -> None:
    """Start JupyterLab on 127.0.0.1 with a generated token; its kernels use these settings, so
    `from tasks.notebook_session import sql` works in a notebook. Runs until Ctrl-C or SIGTERM."""
    import importlib.util
    import signal

    from flows.cli import _State, fail, out, settings

    s = settings()
    if importlib.util.find_spec("jupyterlab") is None:
        fail("jupyterlab is not installed in this environment: `uv sync` installs it with the dev group", 1)
    if not root.is_dir():
        fail(f"--dir: {root} is not a folder", 2)
    port = port or free_port()
    token = secrets.token_urlsafe(32)
    log = s.state_dir / "logs" / "jupyterlab.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        # its own session: Ctrl-C reaches this command, which stops JupyterLab and its kernels itself
        process = subprocess.Popen(jupyter_command(port, root.resolve()), env=kernel_env(dict(os.environ), _State.config, token),
                                   stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: JupyterLab goes too
    try:
        problem = _wait_until_serving(process, port, token, log)
        if problem is not None:
            fail(problem, 1)
        out.print(f"JupyterLab: http://{HOST}:{port}/lab?token={token}", highlight=False, soft_wrap=True)
        out.print(f"serving {root.resolve()} · kernels use the {s.profile} profile's settings · log {log} · "
                  "Ctrl-C stops it", highlight=False, soft_wrap=True)
        sys.stdout.flush()
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            process.terminate()  # JupyterLab shuts its kernels down on SIGTERM
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the session this Popen started
                process.wait(timeout=10)
