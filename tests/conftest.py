"""Shared fixtures. ``stack_settings`` brings the real local stack up once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK_CONFIG = ROOT / "infra" / "stack.toml"



def _stack_client_env() -> None:
    """The stack's secrets exist before anything reads them (``stack up`` makes the same ones,
    idempotently), and this process is a client of the stack like any `lakehouse` command: flows
    called in-process report to the stack's Prefect server with its basic auth, never to an
    ephemeral server; Ray, read once when first imported (Daft may import it early), joins the
    head with its token, on loopback."""
    from infra.services import prefect_env, ray_env
    from tasks.settings import Settings, load_settings
    from tasks.stack_secrets import generate

    generate(ROOT / ".lakehouse", list(Settings.model_fields))
    settings = load_settings(STACK_CONFIG, state_dir=str(ROOT / ".lakehouse"))
    for key, value in {**ray_env(settings), **prefect_env(settings)}.items():
        if key != "PREFECT_HOME":
            os.environ.setdefault(key, value)


def _unit_only(args: list[str], cwd: Path) -> bool:
    """Every path asked for is in the unit tier (`make test` runs it while `stack up` makes the
    stack's secrets: generating them here too could race it and write other values)."""
    unit = ROOT / "tests" / "unit"
    paths = [(cwd / arg.split("::")[0]).resolve() for arg in args if not arg.startswith("-")]
    return bool(paths) and all(path == unit or unit in path.parents for path in paths)


def pytest_configure(config):
    if not _unit_only(config.args, Path(config.invocation_params.dir)):
        _stack_client_env()


# Modules that disturb the Ray cluster run last, in this order: the two-node test takes a second
# node away (warm actors that need no CPU may have been placed on it), and the next two stop the
# head: Ray ends a driver whose head goes away, and Daft keeps its runner for the life of the
# process, so nothing after them may use Ray.
LAST_MODULES = ("test_two_nodes.py", "test_ray_faults.py", "test_stack_lifecycle.py")


# Modules that must have the stack to themselves: they stop, restart or add services (the broker
# in test_retries), read what listens on the machine, or deploy to and count the runs of the
# stack's own Prefect work pool (test_orchestration). `make test` runs every other stack test in
# two processes, each on lakehouses of its own, then these alone.
EXCLUSIVE_MODULES = LAST_MODULES + ("test_service_faults.py", "test_loopback_only.py", "test_retries.py",
                                    "test_orchestration.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LAST_MODULES.index(name) + 1 if name in LAST_MODULES else 0

    for item in items:
        if item.path.name in EXCLUSIVE_MODULES:
            item.add_marker(pytest.mark.exclusive)
    items.sort(key=rank)  # stable: every other test keeps its order


def stack_environment() -> dict[str, str]:
    """The environment a `lakehouse` subprocess needs to talk to the local stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env["LAKEHOUSE_CONFIG"] = str(STACK_CONFIG)
    env["LAKEHOUSE_STATE_DIR"] = str(ROOT / ".lakehouse")
    return env


@pytest.fixture(scope="session")
def stack_settings():
    """Settings of the real stack, started (and later stopped) by the suite if it is not up."""
    from infra.stack import Stack
    from tasks.settings import load_settings

    settings = load_settings(STACK_CONFIG, state_dir=str(ROOT / ".lakehouse"))
    stack = Stack(settings)
    was_up = all(s.healthy for s in stack.status())
    stack.up()
    yield settings
    if not was_up and not os.environ.get("LAKEHOUSE_KEEP_STACK"):
        stack.down()
