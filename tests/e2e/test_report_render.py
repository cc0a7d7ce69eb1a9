"""`lakehouse report` rendered by a real browser: headless Chromium (tests/e2e/cdp.py) opens the
written file with the network off, every plot decodes as an image of its drawn size, every section
is there, and a screenshot is kept in .lakehouse/test-output/. No services: the report reads tiny
gold tables of a private SQLite catalog (tests/unit/test_report.py writes them)."""

from __future__ import annotations

import os
import shutil
from unittest import mock

import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="Debian's chromium is not installed")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1100,2600",
]
TITLES = ["Volume", "Success rate", "Latency percentiles", "Plan mix", "Anomalies", "Capacity forecast"]


def test_the_report_renders_in_chromium_with_every_plot(tmp_path, monkeypatch):
    from flows.cli import app
    from tests.e2e.cdp import Chromium
    from tests.unit.test_report import _only, build_gold_lakehouse

    env = build_gold_lakehouse(tmp_path / "lakehouse", with_forecast=True)
    _only(monkeypatch, env)
    report = tmp_path / "report.html"
    with mock.patch.dict(os.environ):
        result = CliRunner().invoke(app, ["report", "--out", str(report)])
    assert result.exit_code == 0, (result.output, result.exception)

    with Chromium(FLAGS, tmp_path / "chromium-profile", timeout=60) as browser:
        page = browser.new_page()
        page.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                       "uploadThroughput": -1})  # self-contained: nothing to fetch
        page.navigate(report.as_uri())
        images = page.wait_for("""(() => { const all = [...document.images];
            return all.length && all.every(i => i.complete) ? all.map(i => [i.alt, i.naturalWidth, i.naturalHeight]) : null; })()""",
                               what="every plot to load")
        titles = page.evaluate("[...document.querySelectorAll('section h2')].map(h => h.textContent)")
        empty = page.evaluate("[...document.querySelectorAll('section.empty')].map(s => s.id)")
        backtest = page.evaluate("document.querySelector('#forecast table').innerText")
        shot = page.screenshot(tmp_path / "lakehouse-report.png")

    assert titles == TITLES
    assert empty == []
    assert len(images) == 8, images  # volume, success, latency, plan mix, 3 anomaly metrics, 1 forecast metric
    assert all(width == 900 and height > 200 for _, width, height in images), images  # 9 in at 100 dpi
    assert "holt_winters" in backtest and "5.2%" in backtest
    assert shot.exists() and shot.stat().st_size > 20_000
    keep = ROOT / ".lakehouse" / "test-output"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / shot.name)
