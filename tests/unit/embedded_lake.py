"""The environment of a private embedded lakehouse (SQLite catalog, file warehouse) for unit tests
that run `lakehouse` commands, whatever the caller exported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def embedded_env(root: Path) -> dict[str, str]:
    """LAKEHOUSE_* of a lakehouse whose catalog, warehouse and state live under ``root``."""
    return {
        "LAKEHOUSE_PROFILE": "embedded",
        "LAKEHOUSE_STATE_DIR": str(root / "state"),
        "LAKEHOUSE_CATALOG_URI": f"sqlite:///{root / 'catalog.db'}",
        "LAKEHOUSE_WAREHOUSE": (root / "warehouse").as_uri(),
        "LAKEHOUSE_RAY_ADDRESS": "",
    }


def only_env(mp: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Exactly ``env`` among the LAKEHOUSE_* variables (`make test` exports LAKEHOUSE_CONFIG)."""
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        mp.delenv(key)
    for key, value in env.items():
        mp.setenv(key, value)
