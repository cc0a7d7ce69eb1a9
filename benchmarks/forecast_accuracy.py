"""Which capacity model forecasts the simulated traffic better: Holt-Winters or seasonal naive.

    .venv/bin/python benchmarks/forecast_accuracy.py [--events 600000] [--days 42] [--seeds 11 12 13 14]

The same seeded traffic as benchmarks/anomaly_detection.py (trend, weekly and daily seasonality,
random incidents) is aggregated by the gold flow's pure functions and backtested by
``tasks.transforms.forecast.capacity_tables`` exactly as gold.forecast_accuracy is: the last 14
complete days held out, MAPE and 80%/95% interval coverage per direction and series. No service and
no table is touched.

Writes benchmarks/results/forecast_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from anomaly_detection import END, facts_of  # noqa: E402
from tasks.simulator import TrafficProfile, random_incidents  # noqa: E402
from tasks.transforms import anomalies, forecast  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "forecast_accuracy.json"


def run(events: int, days: int, seed: int) -> list[dict]:
    incidents = random_incidents(END - timedelta(days=days), END, 24, seed)
    profile = TrafficProfile(events=events, days=days, seed=seed, end=END, trend=0.03, seasonal=True, incidents=incidents)
    hourly = anomalies.hourly_metrics(facts_of(profile)).to_arrow().select(["event_hour", "direction", "requests"])
    predicted, accuracy = forecast.capacity_tables(hourly)
    chosen = {(r["direction"], r["metric"]): r["model"] for r in predicted.to_pylist()}
    return [{**r, "seed": seed, "chosen": chosen[(r["direction"], r["metric"])] == r["model"],
             "history_through": str(r["history_through"])} for r in accuracy.to_pylist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--days", type=int, default=42)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14])
    args = parser.parse_args()
    rows = [row for seed in args.seeds for row in run(args.events, args.days, seed)]
    models = {}
    for model in forecast.MODELS:
        mine = [r for r in rows if r["model"] == model]
        models[model] = {
            "series": len(mine), "mean_mape": round(statistics.fmean(r["mape"] for r in mine), 4),
            "mean_coverage_80": round(statistics.fmean(r["coverage_80"] for r in mine), 4),
            "mean_coverage_95": round(statistics.fmean(r["coverage_95"] for r in mine), 4),
            "times_chosen": sum(r["chosen"] for r in mine),
        }
        print(f"{model:15s} MAPE {models[model]['mean_mape']:.3f}  coverage 80% {models[model]['mean_coverage_80']:.2f}"
              f"  95% {models[model]['mean_coverage_95']:.2f}  chosen {models[model]['times_chosen']}/{len(mine)}")
    result = {"benchmark": "forecast_accuracy", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "traffic": {"events": args.events, "days": args.days, "seeds": args.seeds, "trend_per_week": 0.03,
                          "seasonal": True, "end": END.isoformat()},
              "holdout_days": forecast.HOLDOUT_DAYS, "models": models, "series": rows}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
