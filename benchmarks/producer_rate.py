"""How fast the simulator feeds Kafka: pure generation and generate+produce, in one run.

    .venv/bin/python benchmarks/producer_rate.py [--events 1000000] [--keep]

Never writes the tables of the lakehouse it is pointed at: it writes no table at all, and produces only
to a new topic of its own (``bench-producer-rate-<hex>``, never the lakehouse's ``kafka_topic``),
deleted at the end (unless --keep), so repeated runs do not pile up data on the broker.

Writes benchmarks/results/producer_rate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from private_lake import drop_topic, private_topic  # noqa: E402
from tasks.settings import load_settings  # noqa: E402
from tasks.simulator import TrafficProfile, generate, produce  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "producer_rate.json"
PARTITIONS = 3


def measure_generation(profile: TrafficProfile) -> dict:
    """Generation alone: the ceiling the producer can reach."""
    started = time.perf_counter()
    count = size = 0
    for record in generate(profile):
        count += 1
        size += len(record.value or b"") + len(record.key or b"")
    seconds = time.perf_counter() - started
    return {"events": count, "bytes": size, "seconds": round(seconds, 3),
            "events_per_s": round(count / seconds), "mb_per_s": round(size / 1e6 / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark topic afterwards")
    args = parser.parse_args()

    base = load_settings()
    profile = TrafficProfile(
        events=args.events, rate=0, duplicate_rate=0.01, late_rate=0.01, malformed_rate=0.001,
        wrong_conversion_rate=0.0005, v2_share=0.3, end=datetime.now(timezone.utc).replace(microsecond=0),
    )
    print(f"generating {args.events:,} events (no Kafka) ...", flush=True)
    generation = measure_generation(profile)
    print(f"  generate          {generation['events_per_s']:>10,} events/s  {generation['mb_per_s']:>7} MB/s"
          f"  ({generation['seconds']} s)", flush=True)

    # a fresh topic each run (ensure_topic's limit admits the multi-MB values whatever the broker says)
    settings = private_topic(base, "producer-rate", partitions=PARTITIONS)
    print(f"producing {args.events:,} events to {settings.kafka_topic} ({PARTITIONS} partitions) ...", flush=True)
    try:
        report = produce(settings, profile)
    finally:
        if not args.keep:
            drop_topic(settings, settings.kafka_topic)
    producing = {"events": report.events, "bytes": report.bytes, "seconds": round(report.seconds, 3),
                 "events_per_s": round(report.rate), "mb_per_s": round(report.mb_per_second, 1),
                 "partitions": report.partitions, "per_kind": report.per_kind,
                 "delivery_errors": report.delivery_errors}
    print(f"  generate+produce  {producing['events_per_s']:>10,} events/s  {producing['mb_per_s']:>7} MB/s"
          f"  ({producing['seconds']} s, flush included)")
    print(f"  per kind: {report.per_kind}")

    result = {
        "benchmark": "producer_rate",
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "events": args.events,
        "topic": settings.kafka_topic,
        "profile": {"duplicate_rate": profile.duplicate_rate, "late_rate": profile.late_rate,
                    "malformed_rate": profile.malformed_rate,
                    "wrong_conversion_rate": profile.wrong_conversion_rate, "v2_share": profile.v2_share},
        "generate": generation,
        "produce": producing,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)},
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
