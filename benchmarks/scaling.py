"""Silver promotion and gold build on one Ray node and on two, over 1 and N partitions.

    .venv/bin/python benchmarks/scaling.py [--events 1000000] [--partitions 1,4] [--nodes 1,2]
        [--second-node-cpus 1] [--second-node-store-mb 1024] [--workdir /tmp/bench-scaling]

Bigger runs: ``--events 4000000`` or ``--events 10000000`` (the stream and the lakehouses grow
with it: about 1 GB of work folder per million events; each run's lakehouse is deleted after it).

One simulator stream of ``--events`` records (5% duplicates, 2% malformed, 1% late; cached in the
workdir, written and landed a chunk at a time) is landed in bronze of a PRIVATE lakehouse per
configuration (benchmarks/private_lake: SQLite catalog, file warehouse; commit events and artifacts
renamed, so no deployment of the lakehouse runs) in 500k-record snapshots, as the ingest does.
For each number of nodes (1: the stack's Ray head; 2: plus a second node on this machine,
tests/integration/second_ray_node.py, joined for the runs and stopped after) and each
``compute_partitions``, a subprocess runs ``silver_flow`` (default bounds: it loops over
promotions of at most 1M records) then ``gold_flow`` on the head (``ray_address=auto``; the Daft
host of its private catalog starts cold) while benchmarks/component_memory samples:

* time: each flow's wall seconds;
* peak memory per component: the flow process (the driver: its process tree, and its own
  high-water mark), the anonymous memory of the run's Ray workers on each node (its job only:
  the Daft host it created and Daft's actors), the object store of each node, and all of them
  together at the same instant.

Every run's silver and gold are then reduced (in another process, outside the measurement) to
row counts and an order-free digest of their rows (DuckDB, streamed), which must be the same in
every configuration of a size. Results are kept per size in benchmarks/results/scaling.json
(``sizes``). Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from component_memory import ComponentSampler, merge_size, stream_chunks  # noqa: E402
from private_lake import ROOT, file_lake, isolate_prefect  # noqa: E402

sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "scaling.json"
SNAPSHOT_RECORDS = 500_000  # the ingest's default micro-batch


# ---- the private lakehouse of one configuration ------------------------------------------------------

def stream(workdir: Path, events: int, seed: int) -> Path:
    from silver_promotion import generate_stream

    path = workdir / f"stream-{events}-{seed}.parquet"
    if not path.exists():
        print(f"generating {events} records ...", flush=True)
        generate_stream(path, events, days=7, seed=seed)
    return path


def build_lake(lake: Path, stream_path: Path) -> dict:
    """Bronze of a new private lakehouse holds the stream, landed a snapshot at a time."""
    import silver_promotion as sp

    from tasks.catalog import ensure_namespaces, open_catalog

    if lake.exists():
        shutil.rmtree(lake)
    settings = file_lake(lake)
    ensure_namespaces(open_catalog(settings, "admin"), settings)
    sp.BATCH_RECORDS = SNAPSHOT_RECORDS
    began, snapshots = time.monotonic(), 0
    for chunk in stream_chunks(stream_path, SNAPSHOT_RECORDS):
        snapshots += len(sp.land_bronze(settings, chunk))
    return {"bronze_snapshots": snapshots, "land_seconds": round(time.monotonic() - began, 1)}


def table_digest(reader) -> dict:
    """Rows and an order-free digest of a table's rows (floats rounded to 9 places), streamed
    through DuckDB: the sum of the rows' hashes, so no sort and no Python object per row."""
    import duckdb
    import pyarrow as pa

    def quoted(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    columns = [f"round({quoted(f.name)}, 9)" if pa.types.is_floating(f.type) else quoted(f.name)
               for f in reader.schema if f.name != "bronze_snapshot_id"]  # per-catalog ids out
    con = duckdb.connect()
    con.register("rows_", reader)
    rows, digest = con.execute(f"select count(*), sum(hash({', '.join(columns)}))::varchar from rows_").fetchone()
    return {"rows": rows, "digest": digest}


def digest_of(settings) -> dict:
    """Row counts and a digest of every silver and gold table."""
    from tasks.catalog import open_catalog
    from tasks.tables import GOLD_TABLES, SILVER_CONVERSION_EVENTS_REJECTED, SILVER_DIM_USERS, SILVER_FACT_CONVERSIONS

    catalog = open_catalog(settings, "serving")
    return {spec.identifier: table_digest(catalog.load_table(spec.identifier).scan().to_arrow_batch_reader())
            for spec in (SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS, SILVER_DIM_USERS, *GOLD_TABLES)}


def child_run(ns) -> None:
    settings = file_lake(Path(ns.lake)).model_copy(update={"compute_partitions": ns.partitions})
    isolate_prefect(settings)
    from flows.gold import gold_flow
    from flows.silver import silver_flow

    began = time.monotonic()
    silver = silver_flow(settings=settings)
    silver_seconds = time.monotonic() - began
    began = time.monotonic()
    gold_flow(settings=settings)
    gold_seconds = time.monotonic() - began
    import ray

    Path(ns.out).write_text(json.dumps({
        "silver_seconds": round(silver_seconds, 2), "gold_seconds": round(gold_seconds, 2),
        "silver_promotions": len(silver.get("batches", [])) or 1,
        "bronze_records": silver["bronze_records"], "facts": silver["facts"],
        "flow_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ray_job": ray.get_runtime_context().get_job_id()}))


def child_digest(ns) -> None:
    Path(ns.out).write_text(json.dumps(digest_of(file_lake(Path(ns.lake)))))


# ---- main -----------------------------------------------------------------------------------------------

def measure(settings, workdir: Path, stream_path: Path, label: str, partitions: int, names: dict[str, str],
            interval: float, digest: bool) -> dict:
    lake = workdir / f"lake-{label.replace('/', '-')}-{time.time_ns()}"  # new catalog: a cold Daft host of its own
    built = build_lake(lake, stream_path)
    out = workdir / f"run-{time.time_ns()}.json"
    log = out.with_suffix(".log")
    from infra.services import prefect_env

    # the stack's Prefect server (a temporary one would start inside the first flow's time)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}, **prefect_env(settings)}
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, "_run", "--lake", str(lake), "--out", str(out), "--partitions", str(partitions)]
    try:
        with open(log, "w") as logf:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
            with ComponentSampler(proc.pid, interval) as sampler:
                rc = proc.wait()
        if rc != 0 or not out.exists():
            print(f"  !! {label} failed (rc {rc}); log {log}:\n{log.read_text()[-3000:]}", flush=True)
            return {"failed": True, "log": str(log), "bronze": built}
        result = json.loads(out.read_text())
        result["bronze"] = built
        result["memory"] = sampler.summary(result.get("ray_job"), names)
        result["log"] = str(log)
        if digest:
            tables = out.with_suffix(".tables.json")
            with open(log, "a") as logf:
                subprocess.run([sys.executable, script, "_digest", "--lake", str(lake), "--out", str(tables)],
                               cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
            result["tables"] = json.loads(tables.read_text()) if tables.exists() else None
        return result
    finally:
        shutil.rmtree(lake, ignore_errors=True)  # ~1 GB per million events; the JSON and log stay


def brief(run: dict) -> dict:
    """The figures of a run worth a line on the console."""
    m = run.get("memory", {})
    return {"silver_s": run.get("silver_seconds"), "gold_s": run.get("gold_seconds"),
            "promotions": run.get("silver_promotions"), "driver_rss_mb": m.get("driver_peak_rss_mb"),
            "nodes": {n: {"workers_mb": v["ray_workers_anon_peak_mb"], "store_mb": v["object_store_used_peak_mb"]}
                      for n, v in m.get("nodes", {}).items()},
            "all_mb": next((v for k, v in m.items() if k.startswith("all_components")), None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="bronze records to promote (4000000, 10000000)")
    parser.add_argument("--partitions", default="1,4", help="compute_partitions values, comma-separated")
    parser.add_argument("--nodes", default="1,2", help="1: the head alone; 2: plus a second node on this machine")
    parser.add_argument("--second-node-cpus", type=int, default=1)
    parser.add_argument("--second-node-store-mb", type=int, default=1024, help="object store of the second node")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--interval", type=float, default=0.2, help="/proc sampling period, seconds")
    parser.add_argument("--no-digest", action="store_true", help="skip comparing the tables")
    parser.add_argument("--workdir", default="/tmp/bench-scaling")
    parser.add_argument("--result", default=None, help=f"JSON to write (default {RESULT.relative_to(ROOT)})")
    args = parser.parse_args()
    try:
        counts = [int(p) for p in args.partitions.split(",")]
        node_counts = [int(n) for n in args.nodes.split(",")]
    except ValueError:
        parser.exit(2, f"scaling.py: --partitions and --nodes take comma-separated integers, got {args.partitions!r} and {args.nodes!r}\n")
    if any(n not in (1, 2) for n in node_counts) or any(p < 1 for p in counts):
        parser.exit(2, f"scaling.py: --nodes takes 1 and/or 2 and --partitions positive integers, got {args.nodes!r} and {args.partitions!r}\n")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stream_path = stream(workdir, args.events, args.seed)
    settings = file_lake(workdir / "probe")
    from tasks.compute import use_ray
    from tests.integration.second_ray_node import alive_nodes, second_node

    use_ray(settings)  # the second node joins through this process's connection
    head = next(i for i, n in alive_nodes().items() if n["Resources"].get("node:__internal_head__"))
    runs: dict[str, dict] = {}
    for nodes in node_counts:
        def run_all(names: dict[str, str]) -> None:
            for partitions in counts:
                key = f"{nodes}-node/{partitions}-partitions"
                print(f"{key} ...", flush=True)
                runs[key] = measure(settings, workdir, stream_path, key, partitions, names, args.interval,
                                    not args.no_digest)
                print(f"  {json.dumps(brief(runs[key]))}", flush=True)
        if nodes == 1:
            run_all({head: "head"})
        else:
            with second_node(settings, workdir / "second-node.log", cpus=args.second_node_cpus,
                             object_store_mb=args.second_node_store_mb) as node:
                run_all({head: "head", node.node_id: "second"})
    tables = {json.dumps(r.get("tables"), sort_keys=True) for r in runs.values() if not r.get("failed")}
    result = {
        "events": args.events, "runs": runs,
        "same_tables_in_every_run": None if args.no_digest else len(tables) == 1,
        "digest": "DuckDB: count(*) and sum(hash(row)) per table, floats rounded to 9 places",
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                    "second_node": {"cpus": args.second_node_cpus, "object_store_mb": args.second_node_store_mb}},
    }
    print(json.dumps({k: brief(v) for k, v in runs.items()}, indent=1))
    print("same tables in every run:", result["same_tables_in_every_run"])
    target = Path(args.result) if args.result else RESULT
    target.parent.mkdir(parents=True, exist_ok=True)
    document = json.loads(target.read_text()) if target.exists() else {}
    target.write_text(json.dumps(merge_size(document, args.events, result, "events"), indent=2, default=str) + "\n")
    print(f"wrote {target} (sizes[{args.events}])")


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--out", required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    ns = parser.parse_args()
    child_digest(ns) if ns.mode == "_digest" else child_run(ns)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_run", "_digest"):
        child_main()
    else:
        main()
