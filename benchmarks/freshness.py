"""Event → gold freshness: steady traffic through the continuous and the scheduled mode, side by side.

For each mode, on a private lakehouse of its own (``PrivateLake``: SQLite catalog, ``bench-*``
buckets on the stack's S3, a ``bench-*`` topic, the stack's Kafka, Ray head and Prefect server,
commit events isolated from the stack's triggers), a producer thread sends ``--rate`` events/s for
``--warmup`` + ``--seconds`` from the moment the mode starts. After ``--warmup`` (steady state: the
process started, warm and caught up, not start-up), once a second one of them is a probe: an event
of a user id never seen before. A poller reads gold.user_activity_summary every second; a probe's
latency is from its send to the first poll that finds its user (the poll period, ~1 s, is the
resolution).

* continuous: `lakehouse serve-continuous` in one long-lived process (flows/continuous.py).
* scheduled: the deployed path's processes, started here as the worker would start them: every
  60 s `lakehouse run ingest` (max 30 s, 20 batches, as prefect.yaml), then, as the commit events
  would trigger them, `lakehouse run silver` and `lakehouse run gold`, each a new interpreter. It
  leaves out the worker's polling and the event trigger's delay, so it is the scheduled mode's
  best case, not the worker itself: the stack's deployments and triggers belong to the stack's
  own lakehouse, which a benchmark never writes.

Also reported per mode: data files written per hour per layer (from the snapshot summaries of
the window), the CPU seconds of the pipeline's processes (the process tree, from /proc; the Ray
actors doing the writes and the Daft jobs live under the Ray head and are not in it) and the
machine's busy share (/proc/stat, everything: the stack and any other load). Prints figures and
writes benchmarks/results/freshness.json; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.private_lake import PrivateLake, child_env, cli_command, drop_topic, private_topic  # noqa: E402
from benchmarks.sampling import process_tree, read_processes, read_stat  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "freshness.json"
TARGETS = {"p50_s": 10.0, "p95_s": 20.0, "events_per_s": 1000}
USERS = 2000  # the steady traffic's users; probes are extra, one new user each
TICK = os.sysconf("SC_CLK_TCK")


# ---- traffic and probes ------------------------------------------------------------------------------

def _event(user: str, n: int, occurred: datetime) -> bytes:
    to_roman = n % 3 != 0
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "conversion", "schema_version": 1,
        "occurred_at": occurred.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "user_id": user,
        "user_plan": "free", "user_country": "DE", "direction": "to_roman" if to_roman else "from_roman",
        "input": "4" if to_roman else "IV", "output": "IV" if to_roman else "4", "success": True,
        "error_code": None, "latency_ms": 1.5, "endpoint": "/v1/to-roman" if to_roman else "/v1/from-roman",
        "http_status": 200, "client": "bench",
    }).encode()


def send_steady(settings, rate: int, seconds: float, probes: dict[str, float], stop: threading.Event,
                probe_after: float = 0.0) -> dict:
    """``rate`` events/s in 10 slices a second; from ``probe_after`` seconds on, the first event of
    every second is a probe."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5,
                         "enable.idempotence": True})
    began = time.monotonic()
    sent, second = 0, -1
    per_slice = max(1, rate // 10)
    while not stop.is_set() and time.monotonic() - began < seconds:
        slice_start = time.monotonic()
        now = datetime.now(timezone.utc) - timedelta(seconds=1)
        for i in range(per_slice):
            n = sent + i
            if i == 0 and slice_start - began >= probe_after and int(slice_start - began) != second:
                second = int(slice_start - began)
                user = f"probe-{uuid.uuid4().hex[:12]}"
                probes[user] = time.time()
            else:
                user = f"bench-user-{n % USERS}"
            producer.produce(settings.kafka_topic, value=_event(user, n, now), key=user.encode())
        sent += per_slice
        producer.poll(0)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - slice_start)))
    producer.flush(60)
    elapsed = time.monotonic() - began
    return {"events": sent, "seconds": round(elapsed, 1), "events_per_s": round(sent / elapsed)}


def poll_gold(settings, probes: dict[str, float], seen: dict[str, float], stop: threading.Event) -> None:
    """Every second: which probe users gold.user_activity_summary holds now."""
    from pyiceberg.expressions import StartsWith

    from tasks.catalog import open_catalog
    from tasks.tables import GOLD_USER_ACTIVITY_SUMMARY

    catalog = open_catalog(settings, "serving")
    while not stop.is_set():
        began = time.monotonic()
        try:
            table = catalog.load_table(GOLD_USER_ACTIVITY_SUMMARY.identifier)
            users = table.scan(row_filter=StartsWith("user_id", "probe-"), selected_fields=("user_id",)).to_arrow()
            at = time.time()
            for user in users.column("user_id").to_pylist():
                seen.setdefault(user, at)
        except Exception:  # noqa: BLE001 - no gold table before the first build
            pass
        stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))


# ---- CPU and files -----------------------------------------------------------------------------------

def _cpu_jiffies_busy_total() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _tree_cpu_seconds(root_pid: int) -> float:
    """utime+stime of ``root_pid`` and its live descendants, plus what their reaped children used."""
    total = 0
    for pid in process_tree(root_pid, read_processes()):
        if (stat := read_stat(pid)) is not None:
            total += sum(int(x) for x in stat[11:15])  # utime, stime, cutime, cstime
    return total / TICK


def files_written(settings, since_ms: int, until_ms: int) -> dict[str, int]:
    """Data files added per table by the snapshots committed in the window."""
    from tasks.catalog import open_catalog
    from tasks.tables import ALL_TABLES

    catalog = open_catalog(settings, "serving")
    counts = {}
    for spec in ALL_TABLES:
        if spec.identifier.split(".")[0] not in ("bronze", "silver", "gold"):
            continue
        try:
            table = catalog.load_table(spec.identifier)
        except Exception:  # noqa: BLE001 - never created in this run
            continue
        counts[spec.identifier] = sum(
            int((s.summary.additional_properties if s.summary else {}).get("added-data-files", 0))
            for s in table.snapshots() if since_ms <= s.timestamp_ms <= until_ms)
    return counts


# ---- the two modes -------------------------------------------------------------------------------

def _prefect(settings) -> dict[str, str]:
    """The stack's Prefect server for the child processes, as the worker's runs have it (without
    it Prefect would start a temporary server of its own in each process)."""
    from infra.services import prefect_env

    return {k: v for k, v in prefect_env(settings).items() if k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")}


class Continuous:
    """`lakehouse serve-continuous` for the whole window, then SIGUSR1 (one last promotion, Completed)."""

    def __init__(self, settings, commit_seconds: float):
        self.env = child_env(settings, LAKEHOUSE_CONTINUOUS_COMMIT_SECONDS=str(commit_seconds),
                             PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30", **_prefect(settings))
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"freshness-continuous-{os.getpid()}.log", "w")
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(cli_command("serve-continuous"), env=self.env, cwd=ROOT, stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def cpu_seconds(self) -> float:
        return _tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.log.close()
            return
        self.process.send_signal(signal.SIGUSR1)
        try:
            self.process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class Scheduled:
    """A loop standing in for the worker: every 60 s ingest (as prefect.yaml), then silver, then gold."""

    def __init__(self, settings):
        self.env = child_env(settings, **_prefect(settings))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.cpu = 0.0
        self.runs = 0
        self.failures = []

    def _run(self, *args: str) -> None:
        before = os.times()
        done = subprocess.run(cli_command(*args), env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=900)
        after = os.times()
        self.cpu += (after.children_user - before.children_user) + (after.children_system - before.children_system)
        self.runs += 1
        if done.returncode != 0:
            self.failures.append(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()[-300:]}")

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            began = time.monotonic()
            self._run("run", "ingest", "--max-seconds", "30", "--until-caught-up")
            self._run("run", "silver")
            self._run("run", "gold")
            self.stop_event.wait(max(0.0, 60 - (time.monotonic() - began)))

    def start(self) -> None:
        self.thread.start()

    def cpu_seconds(self) -> float:
        return self.cpu

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout=900)


def measure(base, mode: str, rate: int, seconds: float, drain: float, commit_seconds: float, warmup: float) -> dict:
    from tasks.catalog import open_catalog
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table

    _retire_writers(base)  # each mode starts its own ingest writer actors
    lake = PrivateLake(base, f"fresh-{mode}", layers=("bronze", "silver", "gold")).create()
    settings = private_topic(lake.settings, f"fresh-{mode}")
    runner = None
    try:
        ensure_table(open_catalog(settings, "ingest"), settings, BRONZE_CONVERSION_EVENTS_RAW)
        runner = Continuous(settings, commit_seconds) if mode == "continuous" else Scheduled(settings)
        probes: dict[str, float] = {}
        seen: dict[str, float] = {}
        stop_poll, stop_send = threading.Event(), threading.Event()
        poller = threading.Thread(target=poll_gold, args=(settings, probes, seen, stop_poll), daemon=True)
        busy0, total0 = _cpu_jiffies_busy_total()
        window_start = int(time.time() * 1000)
        runner.start()
        poller.start()
        # Traffic from the start, probes only after ``warmup``: steady state, with the process started,
        # warm and caught up with what arrived meanwhile (scheduled: its first runs went).
        print(f"[{mode}] {rate} events/s for {warmup + seconds:.0f} s on {settings.kafka_topic}, probes after "
              f"{warmup:.0f} s ...", flush=True)
        sent = send_steady(settings, rate, warmup + seconds, probes, stop_send, probe_after=warmup)
        # the last probes get ``drain`` seconds more to reach gold
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and len(seen.keys() & probes.keys()) < len(probes):
            time.sleep(1.0)
        cpu = runner.cpu_seconds()
        busy1, total1 = _cpu_jiffies_busy_total()
        window_end = int(time.time() * 1000)
        stop_poll.set()
        poller.join(timeout=30)
        done, runner = runner, None
        done.stop()
        if mode == "scheduled":
            cpu = done.cpu_seconds()
        hours = (window_end - window_start) / 3_600_000
        latencies = sorted(seen[u] - t for u, t in probes.items() if u in seen)
        files = files_written(settings, window_start, window_end)
        result = {
            "mode": mode, "sent": sent, "probes": len(probes), "probes_seen": len(latencies),
            "probes_missed": len(probes) - len(latencies),
            "latency_s": _percentiles(latencies),
            "probe_latencies_s": [round(seen[u] - t, 2) if u in seen else None
                                  for u, t in sorted(probes.items(), key=lambda item: item[1])],
            "warmup_s": warmup,
            "files_written": files,
            "files_per_hour": {k: round(v / hours) for k, v in files.items()},
            "pipeline_cpu_s": round(cpu, 1),
            "pipeline_cpu_cores": round(cpu / ((window_end - window_start) / 1000), 2),
            "machine_busy_share": round((busy1 - busy0) / max(1, total1 - total0), 3),
            "window_s": round((window_end - window_start) / 1000, 1),
        }
        if mode == "continuous":
            result["commit_seconds"] = commit_seconds
        else:
            result["process_runs"], result["failures"] = done.runs, done.failures
        return result
    finally:
        if runner is not None:  # interrupted: stop the pipeline before its lakehouse goes
            runner.stop()
        try:
            drop_topic(settings, settings.kafka_topic)
        finally:
            lake.drop()


def _retire_writers(settings) -> None:
    """Ask the warm ingest writer actors to exit (after their current calls), in a child process:
    this one must not join Ray (its drivers are the pipeline's processes)."""
    code = ("import os, sys; sys.path.insert(0, %r)\n"
            "from tasks.settings import load_settings\nfrom tasks.compute import ray_client_env\n"
            "s = load_settings(); os.environ.update(ray_client_env(s))\nimport ray\n"
            "ray.init(address=s.ray_address or 'auto', log_to_driver=False)\n"
            "from tasks import warm_actors\nfrom tasks.bronze_writers import NAME_PREFIX\n"
            "warm_actors.retire_stale(NAME_PREFIX, keep=None, wait_seconds=30)\n") % str(ROOT)
    subprocess.run([sys.executable, "-c", code], env=child_env(settings), cwd=ROOT, capture_output=True, timeout=120)


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "min": None, "max": None, "mean": None}

    def rank(p: float) -> float:  # nearest rank, as gold's percentiles
        import math

        return round(values[max(0, math.ceil(p / 100 * len(values)) - 1)], 2)

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "min": round(values[0], 2),
            "max": round(values[-1], 2), "mean": round(statistics.fmean(values), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="events per second (target 1,000)")
    parser.add_argument("--seconds", type=float, default=180, help="steady traffic per mode")
    parser.add_argument("--drain", type=float, default=90, help="seconds after the traffic for the last probes")
    parser.add_argument("--commit-seconds", type=float, default=5.0, help="continuous mode's time bound")
    parser.add_argument("--modes", default="continuous,scheduled")
    parser.add_argument("--warmup", type=float, default=60,
                        help="seconds of traffic after starting a mode before the first probe")
    parser.add_argument("--result", default=None, help=f"JSON to write (default {RESULT.relative_to(ROOT)})")
    args = parser.parse_args()

    from benchmarks.private_lake import clear_lakehouse_env
    from tasks.settings import load_settings

    base = load_settings()
    clear_lakehouse_env()
    result = {"benchmark": "freshness", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "targets": TARGETS, "rate": args.rate, "seconds_per_mode": args.seconds,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
              "modes": {}}
    for mode in args.modes.split(","):
        result["modes"][mode] = figures = measure(base, mode, args.rate, args.seconds, args.drain, args.commit_seconds,
                                                       args.warmup)
        lat = figures["latency_s"]
        print(f"[{mode}] sent {figures['sent']['events']:,} ({figures['sent']['events_per_s']:,}/s); probes "
              f"{figures['probes_seen']}/{figures['probes']} in gold; event -> gold p50 {lat['p50']} s, p95 "
              f"{lat['p95']} s, p99 {lat['p99']} s (max {lat['max']}); files/h {figures['files_per_hour']}; "
              f"pipeline CPU {figures['pipeline_cpu_cores']} cores, machine busy {figures['machine_busy_share']:.0%}",
              flush=True)
    print(f"{'mode':<12}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'missed':>8}{'files/h':>10}{'cpu cores':>11}")
    for mode, f in result["modes"].items():
        lat = f["latency_s"]
        print(f"{mode:<12}{lat['p50']!s:>8}{lat['p95']!s:>8}{lat['p99']!s:>8}{f['probes_missed']:>8}"
              f"{sum(f['files_per_hour'].values()):>10}{f['pipeline_cpu_cores']:>11}")
    print(f"targets: p50 <= {TARGETS['p50_s']} s, p95 <= {TARGETS['p95_s']} s at {TARGETS['events_per_s']} events/s")
    out = Path(args.result) if args.result else RESULT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
