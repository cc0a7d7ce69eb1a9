"""Kafka → committed bronze: the ingest flow's rate beside a bare confluent-kafka consume loop, in one run.

    .venv/bin/python benchmarks/ingest_rate.py [--events 1000000] [--keep]

Never writes the tables of the lakehouse it is pointed at: it ingests into a private lakehouse
(benchmarks/private_lake.PrivateLake: SQLite catalog in a temporary folder, buckets
``bench-ingest-rate-<run>-bronze`` on the same S3, consumer group of its own) from topics of its own,
with its commit events and artifacts renamed so no deployment of the lakehouse is triggered.

1. produces ``--events`` simulator events (small dirty rates) to each of two fresh 3-partition topics;
2. (a) reads one back with a bare consume loop (one consumer, all partitions assigned from the
   start, ``consume(num_messages=10000)``, touching value/key/offset only), before and after (b, c);
3. (b) retires the warm ingest writer actors, then drains the first topic into bronze with
   ``lakehouse run ingest --until-caught-up`` in a subprocess: the cold case, the first run after
   a deploy or a long pause;
4. (c) drains the second topic the same way with the writers warm: every scheduled run after that.

Each measures launch → last bronze commit (the Iceberg snapshot's own timestamp) and the time
inside the flows, with a per-phase breakdown from the Prefect log lines.

Writes benchmarks/results/ingest_rate.json. Prints figures; never asserts. Topics are unique per
run; they, the private buckets (with the bronze files), the consumer group and the catalog are
deleted at the end (unless --keep). The ingest runs through ``benchmarks/private_lake.py cli``: the
``lakehouse`` command with ``isolate_prefect`` applied (see there). Step (b) retires the bronze
writer actors, which every lakehouse on the Ray head shares: a concurrent ingest of another
lakehouse starts them again. The helpers here are shared with benchmarks/ingest_rss.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LAKEHOUSE_CONFIG", str(ROOT / "infra" / "stack.toml"))

from private_lake import PrivateLake, child_env, cli_command, drop_topic, private_topic  # noqa: E402
from tasks.kafka import consumer_config, watermarks  # noqa: E402
from tasks.settings import Settings, load_settings  # noqa: E402
from tasks.simulator import TrafficProfile, produce  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "ingest_rate.json"
PARTITIONS = 3
TARGET_RATIO = 0.5
TARGET_RATE = 100_000


# ---- shared helpers (also used by ingest_rss.py) ------------------------------------------------

def base_settings() -> Settings:
    """The lakehouse the benchmark is pointed at: only its services are used, never its tables."""
    return load_settings()


def private_lake(label: str) -> PrivateLake:
    """A private lakehouse on the base settings' S3, with its bronze table created (so the first
    measured run does not create it)."""
    from tasks.catalog import open_catalog
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table

    lake = PrivateLake(base_settings(), label, layers=("bronze",))
    try:
        lake.create()
        ensure_table(open_catalog(lake.settings, "ingest"), lake.settings, BRONZE_CONVERSION_EVENTS_RAW)
    except BaseException:
        lake.drop()
        raise
    return lake


def new_topic(settings: Settings, label: str) -> Settings:
    """A fresh, uniquely named ``bench-...`` topic with 3 partitions; returns settings pointing at it."""
    return private_topic(settings, label, partitions=PARTITIONS)


def produce_backlog(settings: Settings, events: int) -> dict:
    """The simulator with small dirty rates; the same seed gives the same records on every topic."""
    profile = TrafficProfile(
        events=events, rate=0, duplicate_rate=0.01, late_rate=0.01, malformed_rate=0.001,
        wrong_conversion_rate=0.0005, v2_share=0.3, seed=42,
        end=datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0),
    )
    report = produce(settings, profile)
    marks = watermarks(settings, settings.kafka_topic)
    return {"events": report.events, "bytes": report.bytes, "seconds": round(report.seconds, 3),
            "events_per_s": round(report.rate), "mb_per_s": round(report.mb_per_second, 1),
            "per_kind": report.per_kind,
            "per_partition": {p: high - low for p, (low, high) in sorted(marks.items())}}


def bare_consume(settings: Settings, topic: str) -> dict:
    """The ceiling: one consumer, all partitions from the low watermark, value/key/offset touched."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    marks = watermarks(settings, topic)
    total = sum(high - low for low, high in marks.values())
    config = consumer_config(settings.kafka_bootstrap, group=f"{topic}-bare-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _high) in marks.items()])
    count = size = 0
    idle_since = None
    try:
        while count < total:
            messages = consumer.consume(num_messages=10_000, timeout=1.0)
            if not messages:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 30:
                    break
                continue
            idle_since = None
            for message in messages:
                if message.error() is not None:
                    raise KafkaException(message.error())
                value, key, _offset = message.value(), message.key(), message.offset()
                size += (len(value) if value else 0) + (len(key) if key else 0)
                count += 1
    finally:
        seconds = time.perf_counter() - started
        consumer.close()
    return {"events": count, "expected": total, "bytes": size, "seconds": round(seconds, 3),
            "events_per_s": round(count / seconds), "mb_per_s": round(size / 1e6 / seconds, 1)}


def parse_reports(text: str) -> list[dict]:
    """The CLI prints one (indented) JSON report per micro-batch on stdout."""
    decoder, reports, i = json.JSONDecoder(), [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return reports
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        if isinstance(obj, dict) and "run_id" in obj:
            reports.append(obj)
        i = end


_LOG = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+\s*\| (Flow run|Task run) '([^']+)' - (.*)$")
_RAY = re.compile(r"^\d{4}-\d\d-\d\d (\d\d):(\d\d):(\d\d),(\d{3})\s+INFO worker\.py:\d+ -- Connected to Ray cluster")
PHASES = ("plan_batch", "read_batch", "commit_batch", "commit_consumer_group", "emit_committed")


def parse_phases(log: str) -> list[dict]:
    """Per flow run, seconds between consecutive Prefect log events.

    ``read_batch`` includes the first-batch Ray connect (``ray_connect``, from Ray's own line);
    ``flow_start`` is flow-run begin as logged, ``flow_end`` from the last task to 'Finished'.
    """
    runs: list[dict] = []
    current: dict | None = None
    last_seen = None
    ray_connected_at = None
    day = 0.0
    for line in log.splitlines():
        m = _RAY.match(line)
        if m:
            ray_connected_at = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 1000 + day
            continue
        m = _LOG.match(line)
        if not m:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 1000 + day
        if last_seen is not None and t < last_seen - 3600:  # midnight
            day += 86400
            t += 86400
        last_seen = t
        kind, name, message = m[5], m[6], m[7]
        if kind == "Flow run" and message.startswith("Beginning flow run"):
            current = {"_begin": t, "_last": t, "phases": {}}
            runs.append(current)
        elif current is None:
            continue
        elif kind == "Task run" and message.startswith("Finished in state"):
            task = name.rsplit("-", 1)[0]
            current["phases"][task] = round(t - current["_last"], 3)
            if task == "read_batch" and ray_connected_at is not None and ray_connected_at > current["_last"]:
                current["phases"]["ray_connect (in read_batch)"] = round(ray_connected_at - current["_last"], 3)
            current["_last"] = t
        elif kind == "Flow run" and message.startswith("Finished in state"):
            current["phases"]["flow_end"] = round(t - current["_last"], 3)
            current["total"] = round(t - current["_begin"], 3)
            current["_end"] = t
    return runs


_BATCH = re.compile(r"bronze batch: (\d+) records, (\d+) bytes, .*, ([\d.]+)s, snapshot (\d+)"
                    r"(?: \((\d+) files; per partition read (\{.*?\}) s, write (\{.*?\}) s\))?")


def _batch_lines(log: str) -> list[dict]:
    """Every committed batch, from the flow's "bronze batch: ..." log line."""
    return [{"records": int(m[1]), "bytes": int(m[2]), "seconds": float(m[3]), "snapshot_id": int(m[4]),
             "files": int(m[5]) if m[5] else None, "read_s_per_partition": m[6], "write_s_per_partition": m[7]}
            for m in map(_BATCH.search, log.splitlines()) if m]


def snapshot_times(settings: Settings, snapshot_ids: list[int]) -> dict[int, float]:
    """Commit time (epoch seconds) of each bronze snapshot, from the snapshot itself."""
    from tasks.catalog import open_catalog
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW

    table = open_catalog(settings, "serving").load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    out = {}
    for sid in snapshot_ids:
        snap = table.snapshot_by_id(sid)
        if snap is not None:
            out[sid] = snap.timestamp_ms / 1000
    return out


def run_cli_ingest(settings: Settings, env: dict | None = None, args: tuple[str, ...] = (),
                   watcher: Callable[[int, threading.Event], None] | None = None, attempts: int = 5) -> dict:
    """``lakehouse run ingest --until-caught-up`` as a subprocess, retried when a concurrent run committed first.

    The child gets exactly ``settings`` (a private lakehouse's) as LAKEHOUSE_* and runs the CLI
    through benchmarks/private_lake.py, so its commit events and artifacts are private too.
    ``watcher(pid, stop)`` runs in a thread while each attempt's process lives (RSS sampling).
    Returns the reports, the launch and exit times, and the captured logs.
    """
    command = cli_command("run", "ingest", "--until-caught-up", *args)
    full_env = child_env(settings, **(env or {}))
    runs = []
    launched = time.time()
    for attempt in range(attempts):
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            started = time.time()
            process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out, stderr=err, text=True)
            stop = threading.Event()
            thread = None
            if watcher is not None:
                thread = threading.Thread(target=watcher, args=(process.pid, stop), daemon=True)
                thread.start()
            code = process.wait(timeout=3600)
            ended = time.time()
            stop.set()
            if thread is not None:
                thread.join()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        runs.append({"attempt": attempt, "started": started, "ended": ended, "returncode": code,
                     "reports": parse_reports(stdout), "log": stderr})
        if code == 3:  # another ingest (a test) committed to bronze first: rerun, it continues
            print(f"  attempt {attempt}: a concurrent commit won; rerunning", flush=True)
            continue
        if code != 0:
            print(stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"ingest exited with {code}")
        break
    reports = [r for run in runs for r in run["reports"]]
    return {"launched": launched, "ended": runs[-1]["ended"], "runs": runs, "reports": reports,
            "log": "\n".join(run["log"] for run in runs)}


def summarize_cli(settings: Settings, result: dict) -> dict:
    """Rate from launch to the last commit, plus the per-batch and per-phase view."""
    # one summary per process: the last batch's report plus total_records and batches
    reports = [r for r in result["reports"] if r.get("total_records", r["records"])]
    records = sum(r.get("total_records", r["records"]) for r in reports)
    batches = _batch_lines(result["log"])
    times = snapshot_times(settings, [b["snapshot_id"] for b in batches] or
                           [r["snapshot_id"] for r in reports if r["snapshot_id"]])
    last_commit = max(times.values()) if times else result["ended"]
    first_commit = min(times.values()) if times else result["ended"]
    to_last_commit = last_commit - result["launched"]
    phases = parse_phases(result["log"])
    totals: dict[str, float] = {}
    for run in phases:
        for name, seconds in run["phases"].items():
            totals[name] = round(totals.get(name, 0.0) + seconds, 3)
    first_flow_begin = None
    if phases and "_begin" in phases[0]:
        # seconds-of-day of the local clock: turn the launch time into the same scale
        lt = time.localtime(result["launched"])
        launch_sod = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + result["launched"] % 1
        first_flow_begin = round(phases[0]["_begin"] - launch_sod, 3)
    flow_seconds = to_last_commit - (first_flow_begin or 0.0)  # first flow begins -> last commit
    return {
        "records": records,
        "bytes": sum(b["bytes"] for b in batches),
        "batches": len(batches),
        "records_per_batch": [b["records"] for b in batches],
        "seconds_per_batch": [b["seconds"] for b in batches],
        "writers_per_batch": [{k: b[k] for k in ("files", "read_s_per_partition", "write_s_per_partition")}
                              for b in batches],
        "attempts": len(result["runs"]),
        "launch_to_last_commit_s": round(to_last_commit, 3),
        "process_wall_s": round(result["ended"] - result["launched"], 3),
        "launch_to_first_flow_begin_s": first_flow_begin,
        "first_to_last_commit_s": round(last_commit - first_commit, 3),
        "first_flow_begin_to_last_commit_s": round(flow_seconds, 3),
        "events_per_s": round(records / to_last_commit) if to_last_commit > 0 else None,
        "events_per_s_in_flows": round(records / flow_seconds) if flow_seconds > 0 else None,
        "phases_total_s": totals,
        "phases_per_flow_run": [{"phases": run["phases"], "total": run.get("total")} for run in phases],
    }


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def _print_phases(title: str, phases: dict, total: float | None = None) -> None:
    print(f"  {title}")
    for name, seconds in phases.items():
        share = f"  {seconds / total:5.1%}" if total else ""
        print(f"    {name:<72} {seconds:8.3f} s{share}")


def retire_writers(settings: Settings) -> int:
    """Stop the warm ingest writer actors, so the next ingest starts them cold; returns how many."""
    from tasks.bronze_writers import NAME_PREFIX, NAMESPACE
    from tasks.compute import ray_client_env

    os.environ.update(ray_client_env(settings))  # before Ray is imported: it reads them once
    import ray

    ray.init(address="auto", log_to_driver=False, ignore_reinit_error=True)
    try:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == NAMESPACE and a["name"].startswith(NAME_PREFIX)]
        for name in names:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        return len(names)
    finally:
        ray.shutdown()


def measure_cli(settings: Settings, label: str) -> dict:
    cli = summarize_cli(settings, run_cli_ingest(settings))
    print(f"  {label}: {cli['events_per_s']:>10,} events/s launch -> last commit ({cli['records']:,} records in "
          f"{cli['launch_to_last_commit_s']} s, {cli['batches']} batches {cli['records_per_batch']})", flush=True)
    print(f"  {label}: {cli['events_per_s_in_flows']:>10,} events/s inside the flows ("
          f"{cli['first_flow_begin_to_last_commit_s']} s from the first flow's start to the last commit); launch -> first flow begins {cli['launch_to_first_flow_begin_s']} s",
          flush=True)
    _print_phases("  phases of the last flow run's last batch, from the Prefect log:", cli["phases_total_s"],
                  cli["launch_to_last_commit_s"])
    for n, (seconds, writers) in enumerate(zip(cli["seconds_per_batch"], cli["writers_per_batch"])):
        print(f"    batch {n}: {seconds} s; {writers}", flush=True)
    return cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true",
                        help="keep the benchmark topics and the private lakehouse (catalog, buckets) afterwards")
    args = parser.parse_args()

    lake = private_lake("ingest-rate")
    settings = lake.settings
    topics = []
    result: dict = {"benchmark": "ingest_rate", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
                    "events": args.events, "targets": {"ratio_to_bare_loop": TARGET_RATIO,
                                                       "events_per_s": TARGET_RATE},
                    "lakehouse": lake.describe()}
    try:
        cold, warm = new_topic(settings, "ingest-cold"), new_topic(settings, "ingest-warm")
        topics += [cold.kafka_topic, warm.kafka_topic]
        for s in (cold, warm):
            print(f"producing {args.events:,} events to {s.kafka_topic} ({PARTITIONS} partitions) ...", flush=True)
            produced = produce_backlog(s, args.events)
            print(f"  produced in {produced['seconds']} s ({produced['events_per_s']:,} events/s); "
                  f"per partition {produced['per_partition']}", flush=True)
        result["topics"] = topics
        result["produce"] = produced

        print("(a) bare confluent-kafka consume loop ...", flush=True)
        bare_before = bare_consume(warm, warm.kafka_topic)
        print(f"  {bare_before['events_per_s']:>10,} events/s  {bare_before['mb_per_s']} MB/s  "
              f"({bare_before['events']:,} in {bare_before['seconds']} s)", flush=True)

        retired = retire_writers(settings)
        print(f"(b) lakehouse run ingest --until-caught-up, cold: {retired} writer actors retired first ...",
              flush=True)
        result["ingest_cli_cold_writers"] = measure_cli(cold, "cold")
        print("(c) the same on the second topic, the writer actors warm (every scheduled run after the first) ...",
              flush=True)
        result["ingest_cli"] = measure_cli(warm, "warm")

        print("(a) bare loop again, after (b) and (c) ...", flush=True)
        bare_after = bare_consume(warm, warm.kafka_topic)
        print(f"  {bare_after['events_per_s']:>10,} events/s  ({bare_after['seconds']} s)", flush=True)

        bare_rate = (bare_before["events_per_s"] + bare_after["events_per_s"]) / 2
        result["bare_consume"] = {"before": bare_before, "after": bare_after, "mean_events_per_s": round(bare_rate)}
        for key, cli in (("warm", result["ingest_cli"]), ("cold", result["ingest_cli_cold_writers"])):
            result[f"ratio_to_bare_loop_{key}"] = round(cli["events_per_s"] / bare_rate, 3)
            result[f"ratio_to_bare_loop_in_flows_{key}"] = round(cli["events_per_s_in_flows"] / bare_rate, 3)
            print(f"{key}: ingest / bare loop {result[f'ratio_to_bare_loop_{key}']:.1%} launch -> last commit, "
                  f"{result[f'ratio_to_bare_loop_in_flows_{key}']:.1%} inside the flows (target >= {TARGET_RATIO:.0%});"
                  f" {cli['events_per_s']:,} events/s launch -> last commit, {cli['events_per_s_in_flows']:,} "
                  f"inside the flows (target >= {TARGET_RATE:,})", flush=True)
    finally:
        if not args.keep:
            for topic in topics:
                try:
                    drop_topic(settings, topic)
                except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                    print(f"could not delete topic {topic}: {exc}", file=sys.stderr)
            lake.drop()
        else:
            print(f"kept topics {topics} and the private lakehouse {lake.describe()}", file=sys.stderr)
    result["machine"] = machine()
    write_result(RESULT, result)


if __name__ == "__main__":
    main()
