"""Kafka → committed bronze: the ingest flow's rate beside a bare confluent-kafka consume loop, in one run.

    .venv/bin/python benchmarks/ingest_rate.py [--events 1000000] [--profile] [--cprofile] [--keep]

1. produces ``--events`` simulator events (small dirty rates) to a fresh 3-partition topic;
2. (a) reads them back with a bare consume loop (one consumer, all partitions assigned from the
   start, ``consume(num_messages=10000)``, touching value/key/offset only), before and after (b);
3. (b) drains them into bronze with ``lakehouse run ingest --until-caught-up`` in a subprocess and
   measures launch → last bronze commit (the Iceberg snapshot's own timestamp), with a per-phase
   breakdown from the Prefect log lines;
4. with ``--profile``, produces the same events to a second fresh topic and drains it with the flow
   in-process, every phase timed from inside (Ray reader tasks split into Kafka loop / Arrow
   building / transfer, the Iceberg append split into partitioning / Parquet / upload / commit).

Writes benchmarks/results/ingest_rate.json. Prints figures; never asserts. Topics are unique per
run and deleted at the end (unless --keep). The ingested rows stay in the shared
bronze.conversion_events_raw table under the benchmark topic's name, like the tests' rows do.
The helpers here are shared with benchmarks/ingest_rss.py.
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

from tasks.kafka import admin_client, consumer_config, ensure_topic, watermarks  # noqa: E402
from tasks.settings import Settings, load_settings  # noqa: E402
from tasks.simulator import TrafficProfile, produce  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "ingest_rate.json"
PARTITIONS = 3
TARGET_RATIO = 0.5
TARGET_RATE = 100_000


# ---- shared helpers (also used by ingest_rss.py) ------------------------------------------------

def base_settings() -> Settings:
    return load_settings()


def new_topic(settings: Settings, label: str) -> Settings:
    """A fresh, uniquely named topic with 3 partitions; returns settings pointing at it."""
    topic = f"bench-{label}-{uuid.uuid4().hex[:10]}"
    ensure_topic(settings, topic, partitions=PARTITIONS)
    return settings.model_copy(update={"kafka_topic": topic})


def drop_topic(settings: Settings, topic: str) -> None:
    admin = admin_client(settings)
    if topic not in admin.list_topics(timeout=10).topics:
        return
    admin.delete_topics([topic])[topic].result(timeout=30)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)


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


def snapshot_times(settings: Settings, snapshot_ids: list[int]) -> dict[int, float]:
    """Commit time (epoch seconds) of each bronze snapshot, from the snapshot itself."""
    from tasks.catalog import open_catalog
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW

    table = open_catalog(settings).load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    out = {}
    for sid in snapshot_ids:
        snap = table.snapshot_by_id(sid)
        if snap is not None:
            out[sid] = snap.timestamp_ms / 1000
    return out


def run_cli_ingest(settings: Settings, env: dict | None = None, args: tuple[str, ...] = (),
                   watcher: Callable[[int, threading.Event], None] | None = None, attempts: int = 5) -> dict:
    """``lakehouse run ingest --until-caught-up`` as a subprocess, retried when a concurrent run committed first.

    ``watcher(pid, stop)`` runs in a thread while each attempt's process lives (RSS sampling).
    Returns the reports, the launch and exit times, and the captured logs.
    """
    command = [str(ROOT / ".venv" / "bin" / "lakehouse"), "run", "ingest", "--until-caught-up", *args]
    full_env = {**os.environ, "LAKEHOUSE_CONFIG": os.environ["LAKEHOUSE_CONFIG"],
                "LAKEHOUSE_KAFKA_TOPIC": settings.kafka_topic, **(env or {})}
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
    reports = [r for r in result["reports"] if r["records"]]
    records = sum(r["records"] for r in reports)
    times = snapshot_times(settings, [r["snapshot_id"] for r in reports if r["snapshot_id"]])
    last_commit = max(times.values()) if times else result["ended"]
    first_commit = min(times.values()) if times else result["ended"]
    to_last_commit = last_commit - result["launched"]
    flow_seconds = sum(r["seconds"] for r in result["reports"])
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
    return {
        "records": records,
        "bytes": sum(r["bytes"] for r in reports),
        "batches": len(reports),
        "records_per_batch": [r["records"] for r in reports],
        "attempts": len(result["runs"]),
        "launch_to_last_commit_s": round(to_last_commit, 3),
        "process_wall_s": round(result["ended"] - result["launched"], 3),
        "launch_to_first_flow_begin_s": first_flow_begin,
        "first_to_last_commit_s": round(last_commit - first_commit, 3),
        "sum_report_seconds": round(flow_seconds, 3),
        "events_per_s": round(records / to_last_commit) if to_last_commit > 0 else None,
        "events_per_s_in_flows": round(records / flow_seconds) if flow_seconds > 0 else None,
        "per_batch_report_seconds": [r["seconds"] for r in result["reports"]],
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


# ---- the in-process, instrumented run (--profile) ---------------------------------------------

def _timed_read(wanted, bootstrap, ingested_at, run_id):
    """Runs on a Ray worker: tasks.kafka.read_partition, with its Arrow building timed apart."""
    import time as _time

    import tasks.transforms.bronze as bronze
    from tasks.kafka import read_partition

    began = _time.time()
    spans = {}
    original = bronze.records_to_arrow

    def timed_records_to_arrow(*a, **kw):
        t = _time.time()
        table = original(*a, **kw)
        spans["arrow_s"] = _time.time() - t
        spans["arrow_started"] = t
        return table

    bronze.records_to_arrow = timed_records_to_arrow
    try:
        batch = read_partition(wanted, bootstrap, ingested_at, run_id)
    finally:
        bronze.records_to_arrow = original
    ended = _time.time()
    import os as _os

    return batch, {"began": began, "ended": ended, "records": batch.records, "bytes": batch.bytes,
                   "table_nbytes": batch.table.nbytes, "worker_pid": _os.getpid(), **spans}


def readers_without_ray(settings: Settings, topic: str, threaded: bool) -> dict:
    """tasks.kafka.read_partition for every partition in this process: no Ray, no Iceberg.

    Sequential, or one thread per partition (librdkafka fetches in its own threads; the Python
    per-message loop shares one GIL). What reading in the driver instead of on Ray would give.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tasks.kafka import PartitionRange

    marks = watermarks(settings, topic)
    deadline = time.time() + 3600
    ranges = [PartitionRange(topic, p, low, high, max_records=10**12, max_bytes=1 << 50, deadline=deadline)
              for p, (low, high) in sorted(marks.items()) if high > low]
    ingested_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    if threaded:
        with ThreadPoolExecutor(len(ranges)) as pool:
            results = list(pool.map(lambda r: _timed_read(r, settings.kafka_bootstrap, ingested_at, "bench"), ranges))
    else:
        results = [_timed_read(r, settings.kafka_bootstrap, ingested_at, "bench") for r in ranges]
    seconds = time.perf_counter() - started
    records = sum(b.records for b, _s in results)
    arrow = [round(s.get("arrow_s", 0.0), 3) for _b, s in results]
    del results
    return {"mode": "threads" if threaded else "sequential", "records": records, "seconds": round(seconds, 3),
            "events_per_s": round(records / seconds), "records_to_arrow_s_per_partition": arrow}


class _Timers:
    def __init__(self):
        self.batches: list[dict] = []
        self.current: dict = {}

    def add(self, name: str, seconds: float) -> None:
        self.current[name] = round(self.current.get(name, 0.0) + seconds, 4)

    def wrap(self, name: str, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.add(name, time.perf_counter() - t)
        wrapper.__wrapped__ = fn
        return wrapper


def profile_in_process(settings: Settings, use_cprofile: bool, side_measurements: bool) -> dict:
    """Drain ``settings.kafka_topic`` with ingest_flow in this process, timing every phase from inside."""
    from infra.services import prefect_env

    from tasks.compute import ray_client_env

    os.environ.update({k: v for k, v in prefect_env(settings).items() if k == "PREFECT_API_URL"})
    if settings.ray_address:
        os.environ.update(ray_client_env(settings))  # before ray is imported: it reads them once
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from pyiceberg.io import pyarrow as pyiceberg_pyarrow
    from pyiceberg.table import Transaction

    import flows.ingest as ingest

    timers = _Timers()
    worker_spans: list[list[dict]] = []
    seen_pids: set[int] = set()
    side: list[dict] = []

    def timed_map_on_ray(fn, items, *args, num_cpus: float = 0.25):
        assert fn is ingest.read_partition
        t0 = time.time()
        remote = ray.remote(num_cpus=num_cpus, max_retries=0)(_timed_read)
        shared = [ray.put(a) for a in args]
        refs = [remote.remote(item, *shared) for item in items]
        submitted = time.time()
        results = ray.get(refs)
        got = time.time()
        spans = [s for _b, s in results]
        worker_spans.append([{**s, "submitted": submitted, "got": got, "t0": t0} for s in spans])
        first_began = min(s["began"] for s in spans)
        last_ended = max(s["ended"] for s in spans)
        timers.add("ray: submit -> first reader running", first_began - t0)
        timers.add("ray: submit -> last reader running (a cold worker shows here)",
                   max(s["began"] for s in spans) - t0)
        pids = [s["worker_pid"] for s in spans]
        timers.add("ray: readers on a worker new to this run", sum(1 for p in pids if p not in seen_pids))
        seen_pids.update(pids)
        timers.add("ray: readers (first start -> last end)", last_ended - first_began)
        timers.add("ray: last reader end -> driver has results", got - last_ended)
        # worker-side split (max over the parallel readers: the critical path)
        timers.add("readers: kafka loop (max of partitions)",
                   max(s["ended"] - s["began"] - s.get("arrow_s", 0) for s in spans))
        timers.add("readers: records_to_arrow (max of partitions)", max(s.get("arrow_s", 0) for s in spans))
        return [b for b, _s in results]

    original_append = Transaction.append
    original_commit = Transaction.commit_transaction
    original_determine = pyiceberg_pyarrow._determine_partitions

    def timed_append(self, df, *a, **kw):
        t = time.perf_counter()
        try:
            return original_append(self, df, *a, **kw)
        finally:
            timers.add("iceberg: transaction.append (partition + parquet + upload + manifests)",
                       time.perf_counter() - t)

    def timed_commit(self, *a, **kw):
        t = time.perf_counter()
        try:
            return original_commit(self, *a, **kw)
        finally:
            timers.add("iceberg: commit_transaction (manifest list + REST commit)", time.perf_counter() - t)

    def timed_determine(*a, **kw):
        # a generator consumed lazily by the writer: time each step of it
        it = iter(original_determine(*a, **kw))
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                timers.add("iceberg: _determine_partitions (split by day)", time.perf_counter() - t)
                return
            timers.add("iceberg: _determine_partitions (split by day)", time.perf_counter() - t)
            yield item

    def measure_side(rows: pa.Table) -> None:
        """Outside the timed flow: what Parquet encoding alone costs on these rows (no upload)."""
        import io

        t = time.perf_counter()
        parts = list(original_determine(ingest_table.spec(), ingest_table.schema(), rows))
        partition_s = time.perf_counter() - t
        t = time.perf_counter()
        encoded = 0
        for part in parts:
            sink = io.BytesIO()
            pq.write_table(part.arrow_table_partition, sink, compression="zstd")
            encoded += sink.tell()
        encode_s = time.perf_counter() - t
        side.append({"rows": rows.num_rows, "arrow_nbytes": rows.nbytes, "day_partitions": len(parts),
                     "determine_partitions_s": round(partition_s, 3),
                     "parquet_zstd_encode_s (serial, in memory)": round(encode_s, 3),
                     "parquet_bytes": encoded})

    original_append_with_offsets = ingest.append_with_offsets

    def timed_append_with_offsets(table, rows, *a, **kw):
        t = time.perf_counter()
        try:
            return original_append_with_offsets(table, rows, *a, **kw)
        finally:
            timers.add("commit_batch: append_with_offsets", time.perf_counter() - t)
            if side_measurements and not side:
                measure_side(rows)

    from tasks.catalog import open_catalog
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table
    ingest_table = ensure_table(open_catalog(settings), settings, BRONZE_CONVERSION_EVENTS_RAW)

    class TaskProxy:
        """Times a task call as the flow sees it (Prefect's task-run bookkeeping included)."""

        def __init__(self, task):
            self.task = task

        def __call__(self, *a, **kw):
            t = time.perf_counter()
            try:
                return self.task(*a, **kw)
            finally:
                timers.add(f"task {self.task.name} (as called)", time.perf_counter() - t)

    patches = {
        "map_on_ray": timed_map_on_ray,
        "use_ray": timers.wrap("use_ray (ray.init + daft runner)", ingest.use_ray),
        "watermarks": timers.wrap("plan_batch: kafka watermarks", ingest.watermarks),
        "open_catalog": timers.wrap("open_catalog", ingest.open_catalog),
        "ensure_table": timers.wrap("ensure_table (load_table)", ingest.ensure_table),
        "latest_offsets": timers.wrap("plan_batch: latest_offsets", ingest.latest_offsets),
        "concat_batches": timers.wrap("commit_batch: concat_batches", ingest.concat_batches),
        "append_with_offsets": timed_append_with_offsets,
        "commit_group_offsets": timers.wrap("commit_consumer_group: kafka commit", ingest.commit_group_offsets),
        **{name: TaskProxy(getattr(ingest, name)) for name in PHASES},
    }
    saved = {name: getattr(ingest, name) for name in patches}
    for name, value in patches.items():
        setattr(ingest, name, value)
    Transaction.append = timed_append
    Transaction.commit_transaction = timed_commit
    pyiceberg_pyarrow._determine_partitions = timed_determine

    profiler = None
    if use_cprofile:
        import cProfile

        profiler = cProfile.Profile()
    reports = []
    started = time.time()
    try:
        while True:
            timers.current = {}
            t = time.perf_counter()
            if profiler:
                profiler.enable()
            try:
                report = ingest.ingest_flow(settings=settings)
            finally:
                if profiler:
                    profiler.disable()
            timers.add("ingest_flow() call, end to end", time.perf_counter() - t)
            timers.current["report.seconds"] = report["seconds"]
            timers.current["records"] = report["records"]
            timers.batches.append(timers.current)
            reports.append(report)
            if report["lag_left"] == 0 or report["records"] == 0:
                break
    finally:
        for name, value in saved.items():
            setattr(ingest, name, value)
        Transaction.append = original_append
        Transaction.commit_transaction = original_commit
        pyiceberg_pyarrow._determine_partitions = original_determine
    ended = time.time()

    records = sum(r["records"] for r in reports)
    totals: dict[str, float] = {}
    for batch in timers.batches:
        for name, seconds in batch.items():
            if name != "records":
                totals[name] = round(totals.get(name, 0.0) + seconds, 3)
    top = None
    if profiler:
        import io
        import pstats

        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(40)
        top = stream.getvalue()
    return {
        "records": records,
        "batches": len(reports),
        "wall_s": round(ended - started, 3),
        "events_per_s": round(records / (ended - started)),
        "phase_totals_s": totals,
        "per_batch": timers.batches,
        "reader_spans": [[{k: (round(v, 3) if isinstance(v, float) and k.endswith("_s") else v)
                           for k, v in s.items()} for s in spans] for spans in worker_spans],
        "side_measurements (first batch, outside the flow)": side,
        "cprofile_driver_main_thread": top,
    }


def _print_phases(title: str, phases: dict, total: float | None = None) -> None:
    print(f"  {title}")
    for name, seconds in phases.items():
        share = f"  {seconds / total:5.1%}" if total else ""
        print(f"    {name:<72} {seconds:8.3f} s{share}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--profile", action="store_true",
                        help="also drain a second copy of the backlog in-process with every phase timed")
    parser.add_argument("--cprofile", action="store_true", help="with --profile: cProfile the driver's main thread")
    parser.add_argument("--no-side", action="store_true", help="with --profile: skip the Parquet-encode side measurement")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark topics afterwards")
    args = parser.parse_args()

    settings = base_settings()
    topics = []
    result: dict = {"benchmark": "ingest_rate", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
                    "events": args.events, "targets": {"ratio_to_bare_loop": TARGET_RATIO,
                                                       "events_per_s": TARGET_RATE}}
    try:
        s = new_topic(settings, "ingest-rate")
        topics.append(s.kafka_topic)
        print(f"producing {args.events:,} events to {s.kafka_topic} ({PARTITIONS} partitions) ...", flush=True)
        result["topic"] = s.kafka_topic
        result["produce"] = produce_backlog(s, args.events)
        print(f"  produced in {result['produce']['seconds']} s ({result['produce']['events_per_s']:,} events/s); "
              f"per partition {result['produce']['per_partition']}", flush=True)

        print("(a) bare confluent-kafka consume loop ...", flush=True)
        bare_before = bare_consume(s, s.kafka_topic)
        print(f"  {bare_before['events_per_s']:>10,} events/s  {bare_before['mb_per_s']} MB/s  "
              f"({bare_before['events']:,} in {bare_before['seconds']} s)", flush=True)

        print("(b) lakehouse run ingest --until-caught-up (subprocess) ...", flush=True)
        cli = summarize_cli(s, run_cli_ingest(s))
        print(f"  {cli['events_per_s']:>10,} events/s launch -> last commit  ({cli['records']:,} records in "
              f"{cli['launch_to_last_commit_s']} s, {cli['batches']} batches {cli['records_per_batch']})", flush=True)
        print(f"  {cli['events_per_s_in_flows']:>10,} events/s inside the flows (sum of report seconds "
              f"{cli['sum_report_seconds']} s); launch -> first flow begins {cli['launch_to_first_flow_begin_s']} s",
              flush=True)
        _print_phases("phases from the Prefect log (all batches):", cli["phases_total_s"],
                      cli["launch_to_last_commit_s"])

        print("(a) bare loop again, after (b) ...", flush=True)
        bare_after = bare_consume(s, s.kafka_topic)
        print(f"  {bare_after['events_per_s']:>10,} events/s  ({bare_after['seconds']} s)", flush=True)

        if args.profile:
            print("(c) read_partition in this process, no Ray (sequential, then one thread per partition) ...",
                  flush=True)
            result["readers_without_ray"] = []
            for threaded in (False, True):
                item = readers_without_ray(s, s.kafka_topic, threaded)
                result["readers_without_ray"].append(item)
                print(f"  {item['events_per_s']:>10,} events/s  {item['mode']} ({item['seconds']} s; "
                      f"records_to_arrow per partition {item['records_to_arrow_s_per_partition']} s)", flush=True)

        bare_rate = (bare_before["events_per_s"] + bare_after["events_per_s"]) / 2
        result["bare_consume"] = {"before": bare_before, "after": bare_after, "mean_events_per_s": round(bare_rate)}
        result["ingest_cli"] = cli
        result["ratio_to_bare_loop"] = round(cli["events_per_s"] / bare_rate, 3)
        result["ratio_to_bare_loop_in_flows"] = round(cli["events_per_s_in_flows"] / bare_rate, 3)
        print(f"ratio ingest / bare loop: {result['ratio_to_bare_loop']:.1%} launch->last commit, "
              f"{result['ratio_to_bare_loop_in_flows']:.1%} inside the flows (target >= {TARGET_RATIO:.0%}); "
              f"absolute {cli['events_per_s']:,} events/s (target >= {TARGET_RATE:,})", flush=True)

        if args.profile:
            p = new_topic(settings, "ingest-profile")
            topics.append(p.kafka_topic)
            print(f"--profile: producing {args.events:,} events to {p.kafka_topic} ...", flush=True)
            produce_backlog(p, args.events)
            print("  draining it with ingest_flow in-process, instrumented ...", flush=True)
            prof = profile_in_process(p, args.cprofile, not args.no_side)
            result["profile_in_process"] = prof
            print(f"  {prof['events_per_s']:>10,} events/s in-process ({prof['records']:,} records in "
                  f"{prof['wall_s']} s, {prof['batches']} batches)")
            _print_phases("phase totals (nested: task times include their parts):", prof["phase_totals_s"],
                          prof["wall_s"])
            for item in prof["side_measurements (first batch, outside the flow)"]:
                print(f"  side measurement: {item}")
            if prof["cprofile_driver_main_thread"]:
                print(prof["cprofile_driver_main_thread"][:6000])
    finally:
        if not args.keep:
            for topic in topics:
                try:
                    drop_topic(settings, topic)
                except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                    print(f"could not delete topic {topic}: {exc}", file=sys.stderr)
    result["machine"] = machine()
    write_result(RESULT, result)


if __name__ == "__main__":
    main()
