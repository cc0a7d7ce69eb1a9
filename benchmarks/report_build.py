"""How long `lakehouse report` and `lakehouse notebook` take to serve, and how big the page is.

    .venv/bin/python benchmarks/report_build.py [--days 365] [--anomaly-days 90] [--no-lakehouse] [--no-notebook]

1. Synthetic gold at scale, no lakehouse: ``--days`` days × 2 directions of daily metrics, 3 plans
   per day, ``--anomaly-days`` × 24 hours × 2 directions of hourly anomalies and a 14-day forecast
   of both metrics; ``render_report`` timed (matplotlib Agg, PNG encoding) and the page measured.
2. The lakehouse the settings point at (``LAKEHOUSE_CONFIG`` / ``LAKEHOUSE_*``), read only, through
   the serving role: ``read_report_data`` and ``render_report`` timed, rows per table.
3. ``lakehouse notebook`` in a temporary folder: seconds until it prints its URL (JupyterLab answering
   an authenticated API call), then stopped with SIGTERM.

Reads, never writes, the tables of the lakehouse it is pointed at. Writes
benchmarks/results/report_build.json. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.report import ACCURACY, ANOMALIES, DAILY, FORECAST, PLANS, read_report_data, render_report  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "report_build.json"


def synthetic(days: int, anomaly_days: int, seed: int = 7) -> dict:
    rng = random.Random(seed)
    end = date(2026, 11, 30)
    daily, plans, anomalies, forecast = [], [], [], []
    for d in range(days):
        day = end - timedelta(days=days - d)
        for direction, base in (("to_roman", 60_000), ("from_roman", 25_000)):
            daily.append({"event_date": day, "direction": direction, "requests": int(base * rng.uniform(0.8, 1.2)),
                          "success_rate": rng.uniform(0.95, 0.999), "p50_latency_ms": rng.uniform(1, 3),
                          "p95_latency_ms": rng.uniform(8, 12), "p99_latency_ms": rng.uniform(20, 40)})
        for plan in ("free", "pro", None):
            plans.append({"event_date": day, "user_plan": plan, "requests": rng.randint(1000, 50_000)})
    start = datetime.combine(end - timedelta(days=anomaly_days), datetime.min.time(), tzinfo=timezone.utc)
    for h in range(anomaly_days * 24):
        for direction in ("to_roman", "from_roman"):
            flag = rng.random() < 0.005
            row = {"event_hour": start + timedelta(hours=h), "direction": direction, "is_anomaly": flag,
                   "baseline_weeks": 4}
            for metric, value in (("requests", 2500.0), ("error_rate", 0.01), ("p95_latency_ms", 10.0)):
                row.update({metric: value * rng.uniform(0.9, 1.1), f"{metric}_baseline": value,
                            f"{metric}_score": rng.uniform(-2, 2), f"{metric}_anomaly": flag and metric == "requests"})
            anomalies.append(row)
    for metric in ("daily_requests", "peak_hour_requests"):
        for direction in ("to_roman", "from_roman"):
            for h in range(1, 15):
                f = 60_000.0 + h
                forecast.append({"direction": direction, "metric": metric, "forecast_date": end + timedelta(days=h),
                                 "horizon_days": h, "forecast": f, "lower_80": f * 0.9, "upper_80": f * 1.1,
                                 "lower_95": f * 0.85, "upper_95": f * 1.15, "model": "holt_winters",
                                 "history_through": end})
    accuracy = [{"direction": "to_roman", "metric": "daily_requests", "model": m, "holdout_days": 14, "mape": 0.05,
                 "coverage_80": 0.8, "coverage_95": 0.95, "history_through": end} for m in ("holt_winters", "seasonal_naive")]
    return {DAILY: daily, PLANS: plans, ANOMALIES: anomalies, FORECAST: forecast, ACCURACY: accuracy}


def timed_render(data: dict) -> dict:
    started = time.perf_counter()
    page = render_report(data, datetime.now(timezone.utc), source="benchmark")
    return {"render_seconds": round(time.perf_counter() - started, 2), "page_kib": round(len(page.encode()) / 1024, 1),
            "plots": page.count("data:image/png;base64,"),
            "rows": {name: (None if rows is None else len(rows)) for name, rows in data.items()}}


def notebook_start() -> dict:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "flows.cli", "notebook", "--dir", folder], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seconds = None
        for line in iter(process.stdout.readline, ""):
            if re.match(r"JupyterLab: http://127\.0\.0\.1:\d+/lab\?token=", line):
                seconds = round(time.perf_counter() - started, 2)
                break
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        return {"seconds_to_url": seconds, "exit_code": process.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--anomaly-days", type=int, default=90)
    parser.add_argument("--no-lakehouse", action="store_true", help="skip reading the configured lakehouse")
    parser.add_argument("--no-notebook", action="store_true", help="skip timing `lakehouse notebook`")
    args = parser.parse_args()
    result: dict = {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "load_average": os.getloadavg()[0]}
    result["synthetic"] = {"days": args.days, "anomaly_days": args.anomaly_days,
                           **timed_render(synthetic(args.days, args.anomaly_days))}
    print(f"synthetic {args.days} days: {result['synthetic']}")
    if not args.no_lakehouse:
        import logging

        from tasks.settings import load_settings

        logging.getLogger("daft.io").setLevel(logging.ERROR)  # "full table scan" notes, as `lakehouse` silences them

        settings = load_settings()
        started = time.perf_counter()
        data = read_report_data(settings)
        read = round(time.perf_counter() - started, 2)
        result["lakehouse"] = {"profile": settings.profile, "read_seconds": read, **timed_render(data)}
        print(f"lakehouse ({settings.profile}): {result['lakehouse']}")
    if not args.no_notebook:
        result["notebook"] = notebook_start()
        print(f"lakehouse notebook: {result['notebook']}")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
