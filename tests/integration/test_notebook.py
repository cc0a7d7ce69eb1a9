"""The notebooks run headless, top to bottom, and draw their plots: the BI walkthrough on gold built
by the flows; Operations, Capacity and Audit on tiny tables written directly (no service needed):
gold.hourly_anomalies / capacity_forecast / forecast_accuracy of the agreed schema and gold's daily
tables (tests/unit/test_report.py writes them), silver rejections and a second gold snapshot."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.integration.private_lakehouse import land_in_bronze, make_event, private_env

pytestmark = pytest.mark.stack


def run_notebook(name: str) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` in a fresh kernel that inherits this process's LAKEHOUSE_*."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, (name, errors)
    return notebook


def images(notebook) -> list:
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]


def printed(notebook) -> str:
    return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


def test_bi_notebook_runs_headless_against_the_flows_gold(private, tmp_path, monkeypatch):
    from flows.gold import gold_flow
    from flows.silver import silver_flow

    land_in_bronze(private, [make_event(i, user=f"u-{i % 3}", plan=("free", "pro")[i % 2]) for i in range(1, 30)])
    silver_flow(settings=private)
    gold_flow(settings=private)

    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    for key, value in private_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert len(images(run_notebook("gold_walkthrough.ipynb"))) == 4


def _add_audit_data(env: dict[str, str]) -> None:
    """Into a ``build_gold_lakehouse``: silver rejections (3 wrong conversions on /v1/to-roman, 2 on
    /v1/from-roman a day earlier, 1 rejected for another reason), and a second gold snapshot that
    adds a day (to_roman 130, from_roman 70 requests) after the first one's 480 requests."""
    from datetime import timedelta

    import pyarrow as pa

    from tasks.catalog import open_catalog
    from tasks.settings import load_settings
    from tasks.tables import GOLD_DAILY_CONVERSION_METRICS, SILVER_CONVERSION_EVENTS_REJECTED, ensure_table
    from tests.integration.private_lakehouse import NOW

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = load_settings()
        rejected = ensure_table(open_catalog(settings, "silver"), settings, SILVER_CONVERSION_EVENTS_REJECTED)
        rows = [(make_event(i, output="V"), ["WRONG_CONVERSION"]) for i in range(3)]
        rows += [(make_event(10 + i, occurred=NOW - timedelta(days=1), direction="from_roman", input="IV",
                             output="5", endpoint="/v1/from-roman"), ["WRONG_CONVERSION"]) for i in range(2)]
        rows += [(make_event(20, output="IV", latency_ms="slow"), ["BAD_TYPE"])]
        schema = rejected.schema().as_arrow()
        rejected.append(pa.Table.from_pylist(
            [{"reason_codes": codes, "reject_detail": "test", "value": value, "source_topic": "t",
              "source_partition": 0, "source_offset": n} for n, (value, codes) in enumerate(rows)], schema=schema))
        gold = open_catalog(settings, "gold").load_table(GOLD_DAILY_CONVERSION_METRICS.identifier)
        schema = gold.schema().as_arrow()
        day = max(r["event_date"] for r in gold.scan().to_arrow().to_pylist()) + timedelta(days=1)
        gold.append(pa.Table.from_pylist([{**{f.name: None for f in schema}, "event_date": day, "direction": d,
                                           "requests": n} for d, n in (("to_roman", 130), ("from_roman", 70))],
                                         schema=schema))


def test_operations_capacity_and_audit_notebooks_run_headless(tmp_path, monkeypatch):
    from tests.unit.test_report import build_gold_lakehouse

    env = build_gold_lakehouse(tmp_path / "lakehouse", with_forecast=True)
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    _add_audit_data(env)
    for key, value in {**env, "PYTHONPATH": str(ROOT)}.items():
        monkeypatch.setenv(key, value)

    operations = run_notebook("operations_anomalies.ipynb")
    assert "96 hours x directions" in printed(operations) and "; 1 flagged" in printed(operations)
    assert len(images(operations)) == 1  # the three metrics against their baselines
    flagged = [o for c in operations.cells for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
    assert len(flagged) == 1 and "error_rate_score" in flagged[0]["data"]["text/html"]

    capacity = run_notebook("capacity_forecast.ipynb")
    assert "gold.capacity_forecast 12 rows" in printed(capacity), printed(capacity)
    assert len(images(capacity)) == 2  # the forecast with its intervals, the backtest's MAPE

    audit = run_notebook("audit_wrong_conversions.ipynb")
    text = printed(audit)
    assert "wrong conversions per endpoint: {'/v1/from-roman': 2, '/v1/to-roman': 3}" in text, text
    assert len(images(audit)) == 1
    # 09:00 yesterday predates this gold: its first snapshot (6 rows, 480 requests) stands in
    assert "has no state as of" in text and "stands in" in text, text
    assert "6 rows, 480 requests; now: 8 rows, 680 requests; 2 rows changed or new" in text, text
