"""The BI notebook runs headless, top to bottom, against gold data, and draws its plots."""

from __future__ import annotations


import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.integration.private_lakehouse import land_in_bronze, make_event, private_env

pytestmark = pytest.mark.stack


def test_notebook_runs_headless_against_gold(private, tmp_path, monkeypatch):
    from flows.gold import gold_flow
    from flows.silver import silver_flow

    land_in_bronze(private, [make_event(i, user=f"u-{i % 3}", plan=("free", "pro")[i % 2]) for i in range(1, 30)])
    silver_flow(settings=private)
    gold_flow(settings=private)

    notebook = nbformat.read(ROOT / "notebooks" / "gold_walkthrough.ipynb", as_version=4)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    for key, value in private_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 4
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
