"""`lakehouse notebook` serves JupyterLab on loopback behind its token, and a user in headless
Chromium (tests/e2e/cdp.py) opens the BI notebook, runs every cell from the Run menu and sees its
four plots; a screenshot is kept in .lakehouse/test-output/. The kernel reaches the lakehouse
through the settings the command handed on: a private SQLite catalog whose tiny gold tables
tests/unit/test_report.py writes. No services."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="Debian's chromium is not installed")

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1800",
]
NOTEBOOK = "gold_walkthrough.ipynb"


def _start(env: dict[str, str], folder) -> tuple[subprocess.Popen, str, list[str]]:
    """`lakehouse notebook` in the background; its URL once it prints it."""
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "notebook", "--dir", str(folder)], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        found = [m for line in lines if (m := re.match(r"JupyterLab: (http://\S+)", line))]
        if found:
            return process, found[0].group(1), lines
        if process.poll() is not None:
            break
        time.sleep(0.5)
    _stop(process)
    pytest.fail(f"`lakehouse notebook` printed no URL: {''.join(lines)[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the command stops JupyterLab and its kernels
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _menu_spot(page, label: str):
    """Where the top menu bar's ``label`` is (Lumino draws the menus: no element to select by text)."""
    return page.wait_for(f"""(() => {{ for (const e of document.querySelectorAll('.lm-MenuBar-item')) {{
        if (e.textContent.trim() === {json.dumps(label)}) {{ const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }} }} return null; }})()""", what=f"the {label} menu")


def test_jupyterlab_runs_the_bi_notebook_in_chromium(tmp_path, monkeypatch):
    from tests.e2e.cdp import Chromium
    from tests.unit.test_report import build_gold_lakehouse

    lakehouse = build_gold_lakehouse(tmp_path / "lakehouse", with_forecast=False)
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, folder / NOTEBOOK)  # JupyterLab autosaves: never the repo's copy
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LAKEHOUSE_", "JUPYTER_TOKEN"))}, **lakehouse}

    process, url, lines = _start(env, folder)
    try:
        base, token = re.match(r"(http://127\.0\.0\.1:\d+)/lab\?token=(\S+)$", url).groups()
        port = int(base.rsplit(":", 1)[1])
        assert _status(f"{base}/api/status") == 403  # the API wants the token
        assert _status(f"{base}/api/status?token={token}") == 200
        with socket.socket() as probe:  # nothing on the machine's other addresses
            outside = [a for a in {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
                       if not a.startswith("127.")]
            if outside:
                probe.settimeout(2)
                assert probe.connect_ex((outside[0], port)) != 0

        with Chromium(FLAGS, tmp_path / "chromium-profile", timeout=90) as browser:
            page = browser.new_page()
            page.navigate(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            page.wait_for("document.querySelectorAll('.jp-Notebook .jp-CodeCell').length > 0", timeout=180,
                          what="the notebook to open")
            page.wait_for("!!document.querySelector('.jp-Notebook') && "
                          "[...document.querySelectorAll('.jp-Toolbar-kernelStatus, .jp-StatusBar-TextItem')]"
                          ".some(e => /Idle/.test(e.textContent))", timeout=180, what="the kernel to be idle")
            page.click_at(*_menu_spot(page, "Run"))
            page.click('.lm-Menu-item[data-command="runmenu:run-all"]')
            page.wait_for("document.querySelectorAll('.jp-OutputArea-output img').length >= 4 && "
                          "![...document.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'))",
                          timeout=300, what="every cell to run and draw its plot")
            text = page.text()
            images = page.evaluate("[...document.querySelectorAll('.jp-OutputArea-output img')]"
                                   ".map(i => [i.naturalWidth, i.naturalHeight])")
            prompts = page.evaluate("[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                                    ".map(p => p.textContent.trim())")
            news = page.evaluate("""(() => { for (const b of document.querySelectorAll('.Toastify button')) {
                if (b.textContent.trim() === 'No') { const r = b.getBoundingClientRect();
                    return [r.x + r.width / 2, r.y + r.height / 2]; } } return null; })()""")
            if news:  # JupyterLab asks once whether to fetch its news: no (it would cover the plots)
                page.click_at(*news)
            page.evaluate("document.querySelector('.jp-OutputArea-output img').scrollIntoView({block: 'start'})")
            time.sleep(1)
            shot = page.screenshot(tmp_path / "jupyterlab-bi-notebook.png")
    finally:
        _stop(process)

    assert "Traceback" not in text, text[:3000]
    assert len(images) == 4 and all(w > 200 and h > 200 for w, h in images), images
    assert prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), prompts  # every cell ran
    assert "profile: embedded" in text  # the kernel read the settings the command handed on
    assert process.returncode is not None
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "JupyterLab still listens after the command stopped"
    keep = ROOT / ".lakehouse" / "test-output"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / shot.name)
