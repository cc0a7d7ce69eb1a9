"""Compaction of one day in 500 small files, in silver and in gold: read time before and after, and throughput.

    .venv/bin/python benchmarks/compaction.py [--files 500] [--silver-rows 1000000]
        [--gold-rows-per-file 48] [--commits 50] [--repeats 3] [--workdir /tmp/bench-compaction] [--keep]

Never writes the tables of the lakehouse it is pointed at: its two tables are in a private lakehouse
(benchmarks/private_lake.PrivateLake: SQLite catalog under the workdir, buckets
``bench-compaction-<run>-silver`` and ``-gold`` of its own on the stack's S3), deleted at the end.

A PRIVATE catalog (SQLite under the workdir; never the stack's REST catalog or its tables) whose two
tables live on the stack's S3 (SeaweedFS), each in a private bucket of its layer:

* silver: ``silver.fact_conversions``-shaped (schema v1 + the v2 columns, day-partitioned on
  occurred_at), one day of ``--silver-rows`` synthetic facts (benchmarks/gold_build.synth_facts);
* gold: ``gold.hourly_api_usage``-shaped (identity-partitioned on event_date), one day of
  ``--files`` × ``--gold-rows-per-file`` synthetic rows (only the file layout matters here, so the
  rows don't keep the table's one-row-per-key rule).

Each day is split into ``--files`` data files that land in ``--commits`` fast appends (as streaming
micro-batches would leave them, minus the per-commit cost of landing 500 commits). Then, per table:

1. files, average size, rows and manifests of the day;
2. read time of the day, ``--repeats`` times each (median reported): Daft (``daft.read_iceberg`` +
   a filter on event_date, what ``lakehouse sql`` runs, on Daft's native runner) and pyiceberg
   (``scan(row_filter).to_arrow()`` on the partition's source column);
3. ``tasks.maintenance.compact_table`` with the default target (128 MiB) and floor, its rewrite on
   the stack's Ray head as in the stack profile, ``now`` moved past the freshness window; its wall
   time and throughput (source bytes rewritten / seconds);
4. 1 and 2 again.

Writes benchmarks/results/compaction.json. Prints figures; never asserts. The private buckets and
everything in them are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULT = ROOT / "benchmarks" / "results" / "compaction.json"
STACK_CONFIG = ROOT / "infra" / "stack.toml"
DAY = date(2025, 1, 15)
TARGET_FILES_PER_DAY_AFTER = 2  # the compaction test: at most 2 files in the day
MB = 1024**2


def private_lake(workdir: Path):
    """The stack's S3 and Ray head with a private SQLite catalog under ``workdir`` and private
    silver and gold buckets (created here; PrivateLake.drop deletes them)."""
    from private_lake import PrivateLake, clear_lakehouse_env

    clear_lakehouse_env()
    from tasks.compute import ray_client_env
    from tasks.settings import load_settings

    base = load_settings(STACK_CONFIG, state_dir=str(ROOT / ".lakehouse"))
    lake = PrivateLake(base, "compaction", workdir=workdir, layers=("silver", "gold"))
    os.environ.update(ray_client_env(lake.settings))  # before Ray is imported: it reads them once
    return lake


# ---- the two days ---------------------------------------------------------------------------------


def silver_rows(n: int, seed: int):
    from gold_build import Population, Rand, synth_facts

    return synth_facts(Rand(seed), Population(30, seed), DAY, n, 0)


def gold_rows(n: int, seed: int):
    import random

    import pyarrow as pa

    rng = random.Random(seed)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)
    endpoints, statuses = ["/v1/to-roman", "/v1/from-roman"], [200, 400, 422, 500]
    return pa.table({
        "event_hour": pa.array([start + timedelta(hours=rng.randrange(24)) for _ in range(n)], pa.timestamp("us", "UTC")),
        "endpoint": pa.array([rng.choice(endpoints) for _ in range(n)]),
        "http_status": pa.array([rng.choice(statuses) for _ in range(n)], pa.int32()),
        "requests": pa.array([rng.randrange(1, 50_000) for _ in range(n)], pa.int64()),
        "avg_latency_ms": pa.array([round(rng.uniform(0.5, 5), 3) for _ in range(n)]),
        "p95_latency_ms": pa.array([round(rng.uniform(2, 20), 3) for _ in range(n)]),
        "event_date": pa.array([DAY] * n, pa.date32()),
    })


def create(catalog, settings, spec, v2_columns=()):
    """The table in the private lakehouse, in its layer's private bucket (the namespace exists)."""
    table = catalog.create_table(spec.identifier, schema=spec.schema, partition_spec=spec.partition_spec,
                                 location=spec.location(settings), properties=spec.properties)
    if v2_columns:
        with table.update_schema() as update:
            for name, kind in v2_columns:
                update.add_column(name, kind)
        table = table.refresh()
    return table


def land(table, rows, files: int, commits: int) -> dict:
    """``rows`` as ``files`` data files (one per slice, written in parallel) in ``commits`` fast appends."""
    import pyarrow as pa
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    rows = pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in table.schema().as_arrow()],
                                schema=table.schema().as_arrow())
    began = time.perf_counter()
    bounds = [rows.num_rows * i // files for i in range(files + 1)]
    slices = [rows.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(files)]

    def write(part):
        return list(_dataframe_to_data_files(table_metadata=table.metadata, df=part, io=table.io))

    with ThreadPoolExecutor(4) as pool:  # S3 PUTs: mostly waiting
        written = [f for fs in pool.map(write, slices) for f in fs]
    wrote = time.perf_counter() - began
    per_commit = -(-len(written) // commits)
    for start in range(0, len(written), per_commit):
        table = table.refresh()
        with table.transaction() as tx:
            with tx.update_snapshot().fast_append() as append:
                for data_file in written[start:start + per_commit]:
                    append.append_data_file(data_file)
    return {"files": len(written), "commits": -(-len(written) // per_commit), "rows": rows.num_rows,
            "seconds": {"write_files": round(wrote, 1), "total": round(time.perf_counter() - began, 1)}}


# ---- measuring --------------------------------------------------------------------------------------


def day_filter(table):
    """The day as each reader is asked for it: pyiceberg on the partition's source column (so it
    prunes by partition), Daft on event_date, as an analyst writes it in `lakehouse sql`."""
    from daft import col
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    if "occurred_at" in table.schema().column_names:  # silver: day(occurred_at) partitions
        lo = datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)
        hi = lo + timedelta(days=1)
        iceberg = And(GreaterThanOrEqual("occurred_at", lo.isoformat()), LessThan("occurred_at", hi.isoformat()))
    else:
        iceberg = EqualTo("event_date", DAY.isoformat())
    return iceberg, col("event_date") == DAY


def layout(table) -> dict:
    table = table.refresh()
    iceberg_filter, _ = day_filter(table)
    tasks = list(table.scan(row_filter=iceberg_filter).plan_files())
    size = sum(t.file.file_size_in_bytes for t in tasks)
    return {"files": len(tasks), "bytes": size, "mb": round(size / MB, 2),
            "avg_file_kb": round(size / len(tasks) / 1024, 1) if tasks else 0,
            "rows": sum(t.file.record_count for t in tasks),
            "manifests": len(table.current_snapshot().manifests(table.io))}


def read_times(table, settings, repeats: int) -> dict:
    import daft

    from tasks.catalog import io_config

    out = {}
    for reader in ("daft", "pyiceberg"):
        seconds, rows = [], None
        for _ in range(repeats):
            fresh = table.refresh()
            iceberg_filter, daft_filter = day_filter(fresh)
            began = time.perf_counter()
            if reader == "daft":
                got = daft.read_iceberg(fresh, io_config=io_config(settings, "serving")).where(daft_filter).to_arrow()
            else:
                got = fresh.scan(row_filter=iceberg_filter).to_arrow()
            seconds.append(time.perf_counter() - began)
            rows = got.num_rows
        out[reader] = {"median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
                       "runs_s": [round(s, 3) for s in seconds], "rows": rows}
    return out


def compact(table, settings) -> dict:
    from tasks.maintenance import compact_table

    now_ms = int(time.time() * 1000) + 2 * 86_400_000  # past the freshness window
    began = time.perf_counter()
    report = compact_table(table, settings, now_ms=now_ms)
    seconds = time.perf_counter() - began
    done = [p for p in report["partitions"] if p["status"] == "committed"]
    source, written = sum(p["bytes_before"] for p in done), sum(p["bytes_after"] for p in done)
    return {"seconds": round(seconds, 2), "partitions_committed": len(done),
            "files_rewritten": sum(p["files_before"] for p in done), "files_written": sum(p["files_after"] for p in done),
            "mb_rewritten": round(source / MB, 2), "mb_written": round(written / MB, 2),
            "mb_per_s": round(source / MB / seconds, 2), "files_per_s": round(sum(p["files_before"] for p in done) / seconds, 1),
            "report_before": report["before"], "report_after": report["after"]}


def measure(name: str, table, settings, repeats: int) -> dict:
    before = layout(table)
    print(f"[{name}] before: {before}", flush=True)
    read_before = read_times(table, settings, repeats)
    print(f"[{name}] read before: {read_before}", flush=True)
    compaction = compact(table, settings)
    print(f"[{name}] compaction: {compaction['seconds']} s, {compaction['mb_rewritten']} MB -> "
          f"{compaction['mb_written']} MB, {compaction['mb_per_s']} MB/s, {compaction['files_per_s']} files/s", flush=True)
    after = layout(table)
    print(f"[{name}] after: {after}", flush=True)
    read_after = read_times(table, settings, repeats)
    print(f"[{name}] read after: {read_after}", flush=True)
    return {"before": before, "after": after, "read_before": read_before, "read_after": read_after,
            "compaction": compaction,
            "read_speedup": {r: round(read_before[r]["median_s"] / read_after[r]["median_s"], 2) for r in read_before}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500, help="small files per day")
    parser.add_argument("--silver-rows", type=int, default=1_000_000, help="facts in the silver day")
    parser.add_argument("--gold-rows-per-file", type=int, default=48)
    parser.add_argument("--commits", type=int, default=50, help="fast appends the small files land in")
    parser.add_argument("--repeats", type=int, default=3, help="reads per reader and state")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", default="/tmp/bench-compaction")
    parser.add_argument("--keep", action="store_true", help="keep the private buckets and the tables' objects on S3")
    parser.add_argument("--result", default=None, help=f"JSON to write (default {RESULT.relative_to(ROOT)})")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    lake = private_lake(workdir)
    settings = lake.settings
    import logging

    import daft

    logging.getLogger("daft.io").setLevel(logging.ERROR)  # as the CLI: no "full table scan" notes

    daft.set_runner_native()  # reads as `lakehouse sql` runs them; compaction's rewrite goes to the Ray head

    from tasks.catalog import open_catalog
    from tasks.tables import GOLD_HOURLY_API_USAGE, SILVER_FACT_CONVERSIONS, V2_FACT_COLUMNS

    result: dict = {"benchmark": "compaction", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
                    "params": {"files": args.files, "silver_rows": args.silver_rows,
                               "gold_rows_per_file": args.gold_rows_per_file, "commits": args.commits,
                               "repeats": args.repeats, "seed": args.seed, "day": str(DAY),
                               "store": "SeaweedFS S3 of the stack in private buckets, private SQLite catalog",
                               "lakehouse": lake.describe(),
                               "compaction_runs_on": f"Ray head ({settings.ray_address})",
                               "target_file_mb": settings.maintenance_target_file_bytes / MB,
                               "small_file_mb": settings.maintenance_small_file_bytes / MB},
                    "targets": {"files_per_day_after_max": TARGET_FILES_PER_DAY_AFTER,
                                "note": "the issue sets no read-time or throughput target"}}
    try:
        lake.create()
        catalog = open_catalog(settings, "maintenance")
        silver = create(catalog, settings, SILVER_FACT_CONVERSIONS, V2_FACT_COLUMNS)
        gold = create(catalog, settings, GOLD_HOURLY_API_USAGE)
        began = time.perf_counter()
        facts = silver_rows(args.silver_rows, args.seed)
        synth = time.perf_counter() - began
        result["setup"] = {"silver": land(silver, facts, args.files, args.commits) | {"synthesize_s": round(synth, 1)},
                           "gold": land(gold, gold_rows(args.files * args.gold_rows_per_file, args.seed),
                                        args.files, args.commits)}
        del facts
        print(f"setup: {result['setup']}", flush=True)
        result["silver"] = measure("silver", silver, settings, args.repeats)
        result["gold"] = measure("gold", gold, settings, args.repeats)
    finally:
        if not args.keep:
            lake.drop()
        else:
            print(f"kept the private lakehouse {lake.describe()}", flush=True)
    result["targets"]["met"] = all(result[t]["after"]["files"] <= TARGET_FILES_PER_DAY_AFTER for t in ("silver", "gold"))
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    summary = {t: {"read_before_s": {r: result[t]["read_before"][r]["median_s"] for r in ("daft", "pyiceberg")},
                   "read_after_s": {r: result[t]["read_after"][r]["median_s"] for r in ("daft", "pyiceberg")},
                   "mb_per_s": result[t]["compaction"]["mb_per_s"],
                   "files": [result[t]["before"]["files"], result[t]["after"]["files"]]} for t in ("silver", "gold")}
    result["summary"] = summary
    print("summary:", json.dumps(summary, indent=1), flush=True)
    target = Path(args.result) if args.result else RESULT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
