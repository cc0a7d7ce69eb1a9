"""Draining a bronze backlog into silver: bounded batches against one unbounded promotion, same run.

    .venv/bin/python benchmarks/silver_backlog.py [--records 1000000] [--snapshot-records 100000]
        [--batch-records 250000] [--batch-bytes 536870912] [--days 30] [--workdir /tmp/bench-silver-backlog]

One simulator stream of ``--records`` records (5% duplicates, 2% malformed, 1% late) is generated
once and cached in the workdir (benchmarks/silver_promotion.generate_stream), and landed, as the
ingest does, in snapshots of ``--snapshot-records`` into the bronze of two PRIVATE lakehouses
(benchmarks/private_lake.file_lake: SQLite catalog and file warehouse under the workdir, the stack's
Ray head). Silver starts empty in both. Then, each in its own subprocess while /proc is sampled
(benchmarks/silver_promotion.run_measured: the process tree and the Ray workers of its job and of
its Daft host), ``silver_flow`` drains the backlog:

* ``unbounded``: bounds above the backlog, so one promotion takes all of it (the old behaviour);
* ``bounded``: ``silver_max_batch_records=--batch-records`` / ``silver_max_batch_bytes``, so it
  loops over bounded promotions until caught up.

The child also polls the Ray object store's usage (plasma bytes used, all nodes: the head is shared
with the stack, so other work counts too) once a second. The two silvers are compared, row counts
and distinct event ids, which must agree.

Never writes the tables of the lakehouse it is pointed at; commit events and artifacts are renamed
(private_lake.isolate_prefect). Writes benchmarks/results/silver_backlog.json. Prints figures;
never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import silver_promotion as sp  # noqa: E402
from private_lake import file_lake, isolate_prefect  # noqa: E402
from sampling import PeriodicSampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "silver_backlog.json"
UNBOUNDED = 10**12


def build(lake: Path, stream: Path, records: int, snapshot_records: int) -> dict:
    """A private lakehouse whose bronze holds the backlog and whose silver is empty."""
    from tasks.catalog import ensure_namespaces, open_catalog

    if lake.exists():
        shutil.rmtree(lake)
    settings = file_lake(lake)
    ensure_namespaces(open_catalog(settings, "admin"), settings)
    sp.BATCH_RECORDS = snapshot_records  # land_bronze's snapshot size
    began = time.monotonic()
    snapshots = sp.land_bronze(settings, sp.read_stream(stream, 0, records))
    return {"bronze_snapshots": len(snapshots), "land_seconds": round(time.monotonic() - began, 1)}


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
    parser.add_argument("--workdir", default="/tmp/bench-silver-backlog")
    parser.add_argument("--result", default=None, help=f"JSON to write (default {RESULT.relative_to(ROOT)})")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stream = workdir / f"stream-{args.records}-{args.days}-{args.seed}.parquet"
    if not stream.exists():
        print(f"generating {args.records} records ...", flush=True)
        sp.generate_stream(stream, args.records, args.days, args.seed)
    results: dict = {"records": args.records, "snapshot_records": args.snapshot_records,
                     "batch_records": args.batch_records, "batch_bytes": args.batch_bytes, "runs": {}}
    for mode, bounds in (("unbounded", (UNBOUNDED, UNBOUNDED)), ("bounded", (args.batch_records, args.batch_bytes))):
        lake = workdir / mode
        print(f"{mode}: landing the backlog in bronze ...", flush=True)
        built = build(lake, stream, args.records, args.snapshot_records)
        print(f"{mode}: draining ...", flush=True)
        run = sp.run_measured("drain", ["--lake", str(lake), "--batch-records", str(bounds[0]),
                                        "--batch-bytes", str(bounds[1])], workdir, args.interval, script=__file__)
        run["bronze"] = built
        if not run.get("failed"):
            run["silver"] = silver_counts(lake)
            m = run["memory"]
            print(f"  {run['promotions']} promotions in {run['flow_seconds']} s; peak RSS driver "
                  f"{m['process_peak_rss_mb']} MB, Ray workers {m['ray_workers_peak_rss_mb']} MB, together "
                  f"{m['peak_process_plus_workers_mb (same instant)']} MB; object store peak "
                  f"{run['object_store_peak_mib']} MiB (spilled {run['object_store_spilled_peak_mib']} MiB); "
                  f"silver {run['silver']}", flush=True)
        results["runs"][mode] = run
    runs = results["runs"]
    if all(not r.get("failed") for r in runs.values()):
        results["same_silver_counts"] = runs["bounded"]["silver"] == runs["unbounded"]["silver"]
        print(f"same silver counts: {results['same_silver_counts']}", flush=True)
    out = Path(args.result) if args.result else RESULT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}", flush=True)


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
