"""Fixtures of the integration tier."""

from __future__ import annotations

import os

import pytest

from tasks.catalog import ensure_namespaces, open_catalog
from tasks.settings import load_settings
from tests.integration.private_lakehouse import private_env


@pytest.fixture
def private(tmp_path, monkeypatch, stack_settings):
    """Settings of a private lakehouse (SQLite catalog, file warehouse) on the stack's Prefect and Ray."""
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    for key, value in private_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    (tmp_path / "warehouse").mkdir()
    ensure_namespaces(open_catalog(settings), settings)
    return settings
