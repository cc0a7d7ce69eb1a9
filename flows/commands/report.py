"""`lakehouse report [--out FILE.html]`: the gold tables as one self-contained HTML page (tasks/report.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import typer


def report_cmd(
    out_file: Path = typer.Option(Path("lakehouse-report.html"), "--out", help="the HTML file to write"),
) -> None:
    """Write an HTML report with plots (volume, success rate, latency percentiles, plan mix,
    anomalies, forecast) from gold, read through the serving role. One file, images inline."""
    from flows.cli import fail, out, settings
    from tasks.report import read_report_data, render_report

    if out_file.exists() and out_file.is_dir():
        fail(f"--out: {out_file} is a directory; give a file name such as report.html", 2)
    if not out_file.parent.is_dir():
        fail(f"--out: the folder {out_file.parent} does not exist", 2)
    s = settings()
    data = read_report_data(s)
    page = render_report(data, datetime.now(timezone.utc), source=f"{s.profile} profile, catalog {s.catalog_uri}")
    out_file.write_text(page, encoding="utf-8")
    missing = [name for name, rows in data.items() if rows is None]
    out.print(f"wrote {out_file} ({len(page.encode()) / 1024:.0f} KiB)"
              + (f"; not built yet: {', '.join(missing)}" if missing else ""), highlight=False, soft_wrap=True)
