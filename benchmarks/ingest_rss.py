"""Peak memory of `lakehouse run ingest --until-caught-up` while it drains a large backlog.

    .venv/bin/python benchmarks/ingest_rss.py [--events 5000000] [--interval 0.2] [--keep]

Never writes the tables of the lakehouse it is pointed at: it drains into a private lakehouse
(benchmarks/private_lake.PrivateLake via ingest_rate.private_lake: SQLite catalog, buckets
``bench-ingest-rss-<run>-bronze`` on the same S3, consumer group of its own) from a topic of its own,
with its commit events and artifacts renamed so no deployment of the lakehouse is triggered.

Produces ``--events`` simulator events to a fresh 3-partition topic, then drains them with the CLI
in a subprocess while sampling /proc every ``--interval`` seconds:

* the ingest process and its descendants (VmRSS, split into anonymous and shared memory: batches
  fetched from Ray's object store are mapped shared memory, counted in RSS but owned by plasma),
  plus the kernel's own high-water mark (VmHWM) of the ingest process;
* the bronze writer actors on the Ray head (they read the partitions and write the Parquet files,
  not the ingest process), identified by their process title ``ray::BronzeWriter``;
* the raylet (it maps the object store) and the machine's MemAvailable.

Writes benchmarks/results/ingest_rss.json. Prints figures; never asserts. The topic is unique; it
and the private lakehouse (buckets with the bronze files, consumer group, catalog) are deleted at
the end (unless --keep).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_rate import (  # noqa: E402
    PARTITIONS, ROOT, drop_topic, machine, new_topic, parse_phases, private_lake, produce_backlog,
    run_cli_ingest, summarize_cli, write_result,
)
from sampling import job_of, mb, process_tree, ray_workers, read_processes, read_status  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "ingest_rss.json"
TARGET_BYTES = 1.5 * 1024**3
KB = 1024
WRITERS = "bronze-writer actors"


class Sampler:
    """Samples the ingest process tree, the Ray workers and the raylet until told to stop."""

    def __init__(self, interval: float):
        self.interval = interval
        self.samples: list[dict] = []  # time, ingest tree, per-job worker sums
        self.workers: dict[int, dict] = {}  # pid -> job, titles, peaks
        self.ingest: dict = {"peak_rss": 0, "peak_at": None, "peak_anon": 0, "peak_shmem": 0, "hwm": 0, "pids": set()}
        self.raylet_peak = 0
        self.min_available = None

    def watch(self, root_pid: int, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            self.sample(root_pid)
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def sample(self, root_pid: int) -> None:
        now = time.time()
        procs = read_processes()
        tree = process_tree(root_pid, procs)
        rss = anon = shmem = 0
        for pid in tree:
            st = read_status(pid)
            if st is None:
                continue
            rss += st.get("VmRSS", 0)
            anon += st.get("RssAnon", 0)
            shmem += st.get("RssShmem", 0)
            if pid == root_pid:
                self.ingest["hwm"] = max(self.ingest["hwm"], st.get("VmHWM", 0))
        self.ingest["pids"].update(tree)
        if rss > self.ingest["peak_rss"]:
            self.ingest.update(peak_rss=rss, peak_at=now, peak_anon=anon, peak_shmem=shmem)

        raylets = [pid for pid, (_p, cmd) in procs.items() if "/raylet/raylet " in cmd]
        per_job: dict[str, int] = {}
        for pid in ray_workers(procs):
            cmd = procs[pid][1]
            st = read_status(pid)
            if st is None:
                continue
            w = self.workers.setdefault(pid, {"job": job_of(pid), "titles": set(), "peak_rss": 0,
                                              "peak_anon": 0, "shmem_at_peak": 0})
            w["titles"].add(cmd.split()[0])
            if st.get("VmRSS", 0) > w["peak_rss"]:
                w.update(peak_rss=st["VmRSS"], peak_anon=st.get("RssAnon", 0), shmem_at_peak=st.get("RssShmem", 0))
            key = WRITERS if "BronzeWriter" in cmd else w["job"]  # detached actors: any job may have made them
            if key:
                per_job[key] = per_job.get(key, 0) + st.get("VmRSS", 0)
        for pid in raylets:
            st = read_status(pid)
            if st:
                self.raylet_peak = max(self.raylet_peak, st.get("VmRSS", 0))
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * KB
                        self.min_available = avail if self.min_available is None else min(self.min_available, avail)
        except OSError:
            pass
        self.samples.append({"t": now, "ingest_rss": rss, "ingest_anon": anon, "workers_by_job": per_job})

    def reader_jobs(self) -> set[str]:
        """The bronze writer actors (they read Kafka and write the files), by their own key."""
        return {WRITERS for w in self.workers.values() if any("BronzeWriter" in t for t in w["titles"])}


def _phase_at(log: str, moment: float) -> str | None:
    """Which flow run / task was running at ``moment`` (epoch seconds), from the Prefect log lines."""
    lt = time.localtime(moment)
    sod = lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + moment % 1
    from ingest_rate import _LOG

    previous = None
    run = 0
    for line in log.splitlines():
        m = _LOG.match(line)
        if not m:
            continue
        t = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 1000
        kind, name, message = m[5], m[6], m[7]
        if kind == "Flow run" and message.startswith("Beginning"):
            run += 1
        if t >= sod:
            if kind == "Task run":
                return f"flow run {run}: {name.rsplit('-', 1)[0]}"
            return f"flow run {run}: {message[:40]}"
        previous = t
    return None if previous is None else "after the last log line"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--interval", type=float, default=0.2, help="sampling period, seconds")
    parser.add_argument("--keep", action="store_true",
                        help="keep the benchmark topic and the private lakehouse (catalog, buckets) afterwards")
    args = parser.parse_args()

    lake = private_lake("ingest-rss")
    settings = lake.settings
    result: dict = {"benchmark": "ingest_rss", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
                    "events": args.events, "interval_s": args.interval,
                    "target_ingest_process_mb": mb(TARGET_BYTES),
                    "limits": {"ingest_max_records": settings.ingest_max_records,
                               "ingest_max_bytes": settings.ingest_max_bytes,
                               "ingest_max_seconds": settings.ingest_max_seconds,
                               "ray_object_store_mb": settings.ray_object_store_mb},
                    "lakehouse": lake.describe()}
    topic = None
    try:
        s = new_topic(settings, "ingest-rss")
        topic = result["topic"] = s.kafka_topic
        print(f"producing {args.events:,} events to {s.kafka_topic} ({PARTITIONS} partitions) ...", flush=True)
        result["produce"] = produce_backlog(s, args.events)
        print(f"  produced {result['produce']['bytes'] / 1e6:,.0f} MB in {result['produce']['seconds']} s "
              f"({result['produce']['events_per_s']:,} events/s)", flush=True)

        sampler = Sampler(args.interval)
        print(f"draining with lakehouse run ingest --until-caught-up, sampling every {args.interval} s ...", flush=True)
        raw = run_cli_ingest(s, watcher=sampler.watch)
        cli = summarize_cli(s, raw)
    finally:
        if not args.keep:
            try:
                if topic:
                    drop_topic(settings, topic)
            finally:
                lake.drop()
        else:
            print(f"kept topic {topic} and the private lakehouse {lake.describe()}", file=sys.stderr)

    jobs = sampler.reader_jobs()
    ours = [w for w in sampler.workers.values() if any("BronzeWriter" in t for t in w["titles"])]
    peak_workers_sum = max((sum(v for j, v in smp["workers_by_job"].items() if j in jobs) for smp in sampler.samples),
                           default=0)
    peak_total = max((smp["ingest_rss"] + sum(v for j, v in smp["workers_by_job"].items() if j in jobs)
                      for smp in sampler.samples), default=0)
    ingest = sampler.ingest
    result.update({
        "ingest": cli,
        "ingest_process": {
            "peak_rss_mb (sampled, process + children)": mb(ingest["peak_rss"]),
            "anon_mb_at_peak": mb(ingest["peak_anon"]),
            "shmem_mb_at_peak (Ray object store pages mapped)": mb(ingest["peak_shmem"]),
            "vmhwm_mb (kernel high-water mark of the main process)": mb(ingest["hwm"]),
            "peak_during": _phase_at(raw["log"], ingest["peak_at"]) if ingest["peak_at"] else None,
            "pids": sorted(ingest["pids"]),
        },
        "ray_workers": {
            "reader_jobs": sorted(jobs),
            "workers": len(ours),
            "peak_rss_mb_per_worker": sorted((mb(w["peak_rss"]) for w in ours), reverse=True),
            "peak_anon_mb_per_worker": sorted((mb(w["peak_anon"]) for w in ours), reverse=True),
            "peak_rss_mb_sum (same instant)": mb(peak_workers_sum),
            "titles": sorted({t for w in ours for t in w["titles"]}),
        },
        "peak_ingest_plus_workers_mb (same instant)": mb(peak_total),
        "raylet_peak_rss_mb": mb(sampler.raylet_peak),
        "min_mem_available_mb": mb(sampler.min_available),
        "samples": len(sampler.samples),
        "series_1s": [
            {"t": round(smp["t"] - raw["launched"], 1), "ingest_mb": mb(smp["ingest_rss"]),
             "workers_mb": mb(sum(v for j, v in smp["workers_by_job"].items() if j in jobs))}
            for i, smp in enumerate(sampler.samples) if i % max(1, round(1 / args.interval)) == 0
        ],
        "phases_per_flow_run": [run["phases"] for run in parse_phases(raw["log"])],
        "machine": machine(),
    })
    target_met = ingest["peak_rss"] <= TARGET_BYTES
    print(f"  drained {cli['records']:,} records in {cli['batches']} batches, launch -> last commit "
          f"{cli['launch_to_last_commit_s']} s ({cli['events_per_s']:,} events/s)")
    print(f"  ingest process peak RSS  {mb(ingest['peak_rss']):>8} MB  (anon {mb(ingest['peak_anon'])} MB, "
          f"shared {mb(ingest['peak_shmem'])} MB; VmHWM {mb(ingest['hwm'])} MB; during "
          f"{result['ingest_process']['peak_during']}); target <= {mb(TARGET_BYTES)} MB: "
          f"{'met' if target_met else 'NOT met'}")
    print(f"  bronze writer actors     {result['ray_workers']['peak_rss_mb_per_worker']} MB peak each "
          f"(anon {result['ray_workers']['peak_anon_mb_per_worker']}), {mb(peak_workers_sum)} MB together at peak; "
          f"jobs {sorted(jobs)}")
    print(f"  ingest + workers at the same instant {mb(peak_total)} MB; raylet peak {mb(sampler.raylet_peak)} MB; "
          f"min MemAvailable {mb(sampler.min_available)} MB")
    write_result(RESULT, result)


if __name__ == "__main__":
    main()
