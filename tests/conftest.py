"""Shared fixtures. ``stack_settings`` brings the real local stack up once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK_CONFIG = ROOT / "infra" / "stack.toml"

# Flows called in-process report to the stack's Prefect server, never to an ephemeral one.
os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:4200/api")
# Ray reads its auth mode once, when it is first imported (Daft may import it early): this test
# process joins the stack's head with the head's token (infra/services.ray_env writes it).
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(ROOT / ".lakehouse" / "run" / "ray-auth-token"))


# Modules that stop the Ray head run last, in this order: Ray ends a driver whose head goes away,
# and Daft keeps its runner for the life of the process, so nothing after them may use Ray.
LAST_MODULES = ("test_ray_faults.py", "test_stack_lifecycle.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LAST_MODULES.index(name) + 1 if name in LAST_MODULES else 0

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
