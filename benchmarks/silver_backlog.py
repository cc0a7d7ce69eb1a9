"""Draining a bronze backlog into silver: bounded batches against one unbounded promotion, same run.

    .venv/bin/python benchmarks/silver_backlog.py [--records 1000000] [--snapshot-records 100000]
        [--batch-records 250000] [--batch-bytes 536870912] [--days 30] [--modes unbounded,bounded]
        [--workdir /tmp/bench-silver-backlog]

The issue's 10M backlog: ``--records 10000000 --modes bounded`` (one unbounded 10M promotion is
the old behaviour the bounds replaced: it would only exhaust memory).

One simulator stream of ``--records`` records (5% duplicates, 2% malformed, 1% late) is generated
once and cached in the workdir (benchmarks/silver_promotion.generate_stream, written 250k records
at a time), and landed, as the ingest does, in snapshots of ``--snapshot-records`` read from the
file one at a time into the bronze of a PRIVATE lakehouse per mode (benchmarks/private_lake.file_lake:
SQLite catalog and file warehouse under the workdir, the stack's Ray head). Silver starts empty.
Then, in a subprocess per mode, ``silver_flow`` drains the backlog:

* ``unbounded``: bounds above the backlog, so one promotion takes all of it (the old behaviour);
* ``bounded``: ``silver_max_batch_records=--batch-records`` / ``silver_max_batch_bytes``, so it
  loops over bounded promotions until caught up.

Meanwhile benchmarks/component_memory samples every process involved: the driver (the child's
process tree), the Ray workers of the child's job on each node (its Daft host and Daft's actors)
and each node's object store, and their sum at the same instant, which the issue bounds by 3 GB.
The child also polls the Ray object store's usage (all nodes) once a second, as a cross-check.
The silvers are reduced to row counts and distinct event ids (the two modes' must agree), then
each mode's lakehouse is deleted (the JSON and the logs stay).

Never writes the tables of the lakehouse it is pointed at; commit events and artifacts are renamed
(private_lake.isolate_prefect). Results are kept per backlog size in
benchmarks/results/silver_backlog.json (``sizes``). Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import silver_promotion as sp  # noqa: E402
from component_memory import ComponentSampler, merge_size, stream_chunks  # noqa: E402
from private_lake import file_lake, isolate_prefect  # noqa: E402
from sampling import PeriodicSampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "silver_backlog.json"
UNBOUNDED = 10**12
MODES = ("unbounded", "bounded")
TARGET_MB = 3 * 1024  # the issue: every process involved at or below 3 GB while draining 10M


def build(lake: Path, stream: Path, snapshot_records: int) -> dict:
    """A private lakehouse whose bronze holds the backlog and whose silver is empty: the stream is
    read and landed one snapshot at a time, so landing 10M records holds 100k of them."""
    from tasks.catalog import ensure_namespaces, open_catalog

    if lake.exists():
        shutil.rmtree(lake)
    settings = file_lake(lake)
    ensure_namespaces(open_catalog(settings, "admin"), settings)
    sp.BATCH_RECORDS = snapshot_records  # land_bronze's snapshot size
    began, snapshots = time.monotonic(), 0
    for chunk in stream_chunks(stream, snapshot_records):
        snapshots += len(sp.land_bronze(settings, chunk))
    return {"bronze_snapshots": snapshots, "land_seconds": round(time.monotonic() - began, 1)}


def drain(lake: Path, bounds: tuple[int, int], workdir: Path, interval: float, stop_after: float | None) -> dict:
    """The child draining ``lake`` while every component's memory is sampled; killed after
    ``stop_after`` seconds if given (the figures then cover the part drained, marked partial)."""
    out = workdir / f"drain-{time.time_ns()}.json"
    log = out.with_suffix(".log")
    cmd = [sys.executable, str(Path(__file__).resolve()), "drain", "--out", str(out), "--lake", str(lake),
           "--batch-records", str(bounds[0]), "--batch-bytes", str(bounds[1])]
    load_before = round(os.getloadavg()[0], 2)  # the machine is shared: other work skews wall times
    began = time.monotonic()
    stopped = False
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=sp.ROOT, env=sp.child_env(), stdout=logf, stderr=subprocess.STDOUT)
        with ComponentSampler(proc.pid, interval) as sampler:
            while True:  # rusage: the child and the descendants it reaped
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if stop_after is not None and time.monotonic() - began > stop_after and not stopped:
                    stopped = True
                    proc.kill()
                time.sleep(0.5)
            proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if stopped:
        job = run_job(sampler.samples)
        retire_host(lake)  # it holds the batch of the killed run
        print(f"  stopped after {stop_after} s (partial); log {log}", flush=True)
        return {"partial": True, "stopped_after_seconds": stop_after, "ray_job": job,
                "process_seconds": round(time.monotonic() - began, 2),
                "load_avg_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
                "memory": sampler.summary(job, {sampler_head(): "head"}), "log": str(log)}
    if rc != 0 or not out.exists():
        print(f"  !! drain failed (rc {rc}); log {log}:\n{log.read_text()[-3000:]}", flush=True)
        return {"failed": True, "rc": rc, "log": str(log)}
    result = json.loads(out.read_text())
    result["process_seconds"] = round(time.monotonic() - began, 2)
    result["load_avg_1m"] = {"before": load_before, "after": round(os.getloadavg()[0], 2)}
    result["process_cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)  # not the Ray workers'
    result["memory"] = sampler.summary(result.get("ray_job"), {sampler_head(): "head"})
    result["log"] = str(log)
    return result


def run_job(samples: list[dict]) -> str | None:
    """The Ray job of a run that never reported it: the one job whose workers appeared during it."""
    before = {job for node in samples[0]["workers"].values() for job in node} if samples else set()
    new = {job for s in samples for node in s["workers"].values() for job in node} - before
    return new.pop() if len(new) == 1 else None


def retire_host(lake: Path) -> None:
    """Kill the private lake's Daft host (and so its Daft actors): the run that used it was killed."""
    import ray

    from tasks import daft_host, warm_actors

    tag = file_lake(lake).catalog_tag
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if (entry["namespace"] == warm_actors.NAMESPACE and entry["name"].startswith(daft_host.NAME_PREFIX)
                and entry["name"].endswith(tag)):
            ray.kill(ray.get_actor(entry["name"], namespace=entry["namespace"]))


def sampler_head() -> str:
    """The Ray head's node id (this process is connected)."""
    import ray

    return next((n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("node:__internal_head__")), "")


def target_check(memory: dict) -> dict:
    """The run's peaks against the issue's 3 GB."""
    together = next((v for k, v in memory.items() if k.startswith("all_components")), None)
    largest = memory.get("largest_single_process_peak_mb")
    return {"target_mb": TARGET_MB, "all_components_peak_mb": together, "largest_single_process_peak_mb": largest,
            "every_process_within": None if largest is None else largest <= TARGET_MB,
            "all_together_within": None if together is None else together <= TARGET_MB}


class StorePoll(PeriodicSampler):
    """Ray object store usage (MiB, all nodes) once a second, in the child."""

    def __init__(self):
        super().__init__(1.0)
        self.peak_mib = 0
        self.peak_spilled_mib = 0
        self.error: str | None = None

    def sample(self) -> None:
        from ray._private.internal_api import memory_summary

        try:
            text = memory_summary(stats_only=True)
        except Exception as exc:  # noqa: BLE001 - a figure missing, not a failed benchmark
            self.error = repr(exc)[:300]
            return
        if used := re.search(r"Plasma memory usage (\d+) MiB", text):
            self.peak_mib = max(self.peak_mib, int(used.group(1)))
        if spilled := re.search(r"Spilled (\d+) MiB", text):
            self.peak_spilled_mib = max(self.peak_spilled_mib, int(spilled.group(1)))


def child_drain(ns) -> None:
    """silver_flow until caught up, with the given bounds."""
    began = time.monotonic()
    settings = file_lake(Path(ns.lake)).model_copy(update={
        "silver_max_batch_records": ns.batch_records, "silver_max_batch_bytes": ns.batch_bytes})
    from infra.services import prefect_env

    # the Prefect server's basic auth, from the state folder's secrets, as `lakehouse run` sets it
    os.environ.update({k: v for k, v in prefect_env(settings).items() if k == "PREFECT_API_AUTH_STRING"})
    isolate_prefect(settings)
    from flows.silver import silver_flow
    from tasks.compute import use_ray

    use_ray(settings)  # before ray is imported here: it sets Ray's auth environment
    import ray
    started = time.monotonic() - began
    with StorePoll() as store:
        t = time.monotonic()
        report = silver_flow(settings=settings)
        flow_seconds = time.monotonic() - t
    batches = report.get("batches", [])
    Path(ns.out).write_text(json.dumps({
        "flow_seconds": round(flow_seconds, 2), "startup_seconds": round(started, 2),
        "promotions": len(batches),
        "batch_records": [b["bronze_records"] for b in batches],
        "batch_seconds": [b["seconds"] for b in batches],
        "totals": {k: report.get(k) for k in ("bronze_records", "facts", "rejected", "duplicates_dropped",
                                              "replaced_by_earlier_arrival", "users_touched")},
        "object_store_peak_mib": store.peak_mib, "object_store_spilled_peak_mib": store.peak_spilled_mib,
        "object_store_poll_error": store.error,
        "ray_job": ray.get_runtime_context().get_job_id(),
    }, default=str))


def silver_counts(lake: Path) -> dict:
    """Rows and distinct event ids of the lake's silver tables."""
    import pyarrow.compute as pc

    from tasks.catalog import open_catalog
    from tasks.tables import SILVER_CONVERSION_EVENTS_REJECTED, SILVER_DIM_USERS, SILVER_FACT_CONVERSIONS

    catalog = open_catalog(file_lake(lake), "serving")
    facts = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).scan(selected_fields=("event_id",)).to_arrow()
    return {"facts": facts.num_rows, "distinct_event_ids": len(pc.unique(facts.column("event_id"))),
            "rejected": catalog.load_table(SILVER_CONVERSION_EVENTS_REJECTED.identifier).scan().count(),
            "dim_users": catalog.load_table(SILVER_DIM_USERS.identifier).scan().count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="bronze backlog to drain")
    parser.add_argument("--snapshot-records", type=int, default=100_000, help="records per bronze snapshot")
    parser.add_argument("--batch-records", type=int, default=250_000, help="silver_max_batch_records of the bounded run")
    parser.add_argument("--batch-bytes", type=int, default=512 * 1024 * 1024, help="silver_max_batch_bytes of the bounded run")
    parser.add_argument("--days", type=int, default=30, help="days the stream spans")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--interval", type=float, default=0.2, help="/proc sampling period, seconds")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: unbounded, bounded")
    parser.add_argument("--stop-after", type=float, default=None,
                        help="seconds: kill a drain still running then and keep its figures as partial")
    parser.add_argument("--keep-lakes", action="store_true", help="keep each mode's lakehouse (~1 GB per million records)")
    parser.add_argument("--workdir", default="/tmp/bench-silver-backlog")
    parser.add_argument("--result", default=None, help=f"JSON to write (default {RESULT.relative_to(ROOT)})")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        parser.exit(2, f"silver_backlog.py: --modes takes a comma-separated subset of {', '.join(MODES)}, got {args.modes!r}\n")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stream = workdir / f"stream-{args.records}-{args.days}-{args.seed}.parquet"
    if not stream.exists():
        print(f"generating {args.records} records ...", flush=True)
        sp.generate_stream(stream, args.records, args.days, args.seed)
    from tasks.compute import use_ray

    use_ray(file_lake(workdir / "probe"))  # to read each node's object store while the child runs
    results: dict = {"records": args.records, "snapshot_records": args.snapshot_records,
                     "batch_records": args.batch_records, "batch_bytes": args.batch_bytes, "runs": {}}
    for mode in modes:
        bounds = (UNBOUNDED, UNBOUNDED) if mode == "unbounded" else (args.batch_records, args.batch_bytes)
        lake = workdir / mode
        print(f"{mode}: landing the backlog in bronze ...", flush=True)
        built = build(lake, stream, args.snapshot_records)
        print(f"{mode}: draining ...", flush=True)
        run = drain(lake, bounds, workdir, args.interval, args.stop_after)
        run["bronze"] = built
        if not run.get("failed"):
            run["silver"] = silver_counts(lake)
            run["target_3gb"] = target_check(run["memory"])
            m = run["memory"]
            head = m.get("nodes", {}).get("head", {})
            print(f"  {run.get('promotions', 'partial:')} promotions in {run.get('flow_seconds', run['process_seconds'])} s; peak: driver RSS "
                  f"{m.get('driver_peak_rss_mb')} MB, Ray workers of the job {head.get('ray_workers_anon_peak_mb')} MB "
                  f"(largest {head.get('largest_ray_worker_anon_peak_mb')} MB), object store "
                  f"{head.get('object_store_used_peak_mb')} MB; {run['target_3gb']}; silver {run['silver']}", flush=True)
        if not args.keep_lakes:
            shutil.rmtree(lake, ignore_errors=True)
        results["runs"][mode] = run
    runs = results["runs"]
    if set(runs) == set(MODES) and all(not r.get("failed") and not r.get("partial") for r in runs.values()):
        results["same_silver_counts"] = runs["bounded"]["silver"] == runs["unbounded"]["silver"]
        print(f"same silver counts: {results['same_silver_counts']}", flush=True)
    out = Path(args.result) if args.result else RESULT
    out.parent.mkdir(parents=True, exist_ok=True)
    document = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps(merge_size(document, args.records, results, "records"), indent=2, default=str) + "\n")
    print(f"wrote {out} (sizes[{args.records}])", flush=True)


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--out", required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--batch-records", type=int, required=True)
    parser.add_argument("--batch-bytes", type=int, required=True)
    child_drain(parser.parse_args())


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "drain":
        child_main()
    else:
        main()
