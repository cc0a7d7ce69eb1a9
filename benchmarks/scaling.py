"""Silver promotion and gold build on one Ray node and on two, over 1 and N partitions.

    .venv/bin/python benchmarks/scaling.py [--events 1000000] [--partitions 1,4] [--nodes 1,2]
        [--second-node-cpus 1] [--second-node-store-mb 1024] [--workdir /tmp/bench-scaling]

Bigger runs: ``--events 4000000`` or ``--events 10000000`` (the stream and the lakehouses grow
with it: about 1 GB of work folder per million events).

One simulator stream of ``--events`` records (5% duplicates, 2% malformed, 1% late; cached in the
workdir) is landed in bronze of a PRIVATE lakehouse per configuration (benchmarks/private_lake:
SQLite catalog, file warehouse; commit events and artifacts renamed, so no deployment of the
lakehouse runs). For each number of nodes (1: the stack's Ray head; 2: plus a second node on this
machine, tests/integration/second_ray_node.py, joined for the runs and stopped after) and each
``compute_partitions``, a subprocess runs ``silver_flow`` then ``gold_flow`` on the head
(``ray_address=auto``; the Daft host of its private catalog starts cold) while /proc is sampled:

* time: each flow's wall seconds;
* peak memory per component: the flow process (its own high-water mark), and the anonymous memory
  of the Ray worker processes of each node (summed per sample, the peak over samples, minus the
  same sum just before the run; the head's workers include other jobs', so that one is noisy).

Every run's silver and gold are reduced to row counts and a digest of their rows, which must be
the same in every configuration. Writes benchmarks/results/scaling.json. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from private_lake import ROOT, file_lake, isolate_prefect  # noqa: E402
from sampling import PeriodicSampler  # noqa: E402

sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "scaling.json"
KB = 1024
NODE_ID = re.compile(r"--node-id=([0-9a-f]+)")


def mb(n: float) -> float:
    return round(n / 1024**2, 1)


# ---- sampling /proc ------------------------------------------------------------------------------

def _anon(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * KB
    except OSError:
        pass
    return 0


def workers_by_node() -> dict[str, int]:
    """Anonymous memory of every Ray worker process on this machine, summed by node id."""
    out: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "default_worker.py" not in cmdline:
            continue
        match = NODE_ID.search(cmdline)
        if match:
            out[match.group(1)] = out.get(match.group(1), 0) + _anon(pid)
    return out


class Sampler(PeriodicSampler):
    """Peak memory of the Ray workers of each node, every ``interval`` seconds."""

    def __init__(self, interval: float):
        super().__init__(interval)
        self.peak, self.baseline = {}, workers_by_node()

    def sample(self) -> None:
        for node, size in workers_by_node().items():
            self.peak[node] = max(self.peak.get(node, 0), size)

    def summary(self, names: dict[str, str]) -> dict:
        return {names.get(node, node[:8]): {"peak_mb": mb(size), "growth_mb": mb(size - self.baseline.get(node, 0))}
                for node, size in self.peak.items() if node in names}


# ---- the private lakehouse of one configuration ------------------------------------------------------

def stream(workdir: Path, events: int, seed: int):
    from silver_promotion import generate_stream, read_stream

    path = workdir / f"stream-{events}-{seed}.parquet"
    if not path.exists():
        print(f"generating {events} records ...", flush=True)
        generate_stream(path, events, days=7, seed=seed)
    return read_stream(path, 0, events)


def build_lake(lake: Path, records) -> None:
    from silver_promotion import land_bronze

    from tasks.catalog import ensure_namespaces, open_catalog

    if lake.exists():
        shutil.rmtree(lake)
    settings = file_lake(lake)
    ensure_namespaces(open_catalog(settings, "admin"), settings)
    land_bronze(settings, records)


def digest_of(settings) -> dict:
    """Row counts and a digest of every silver and gold table (floats rounded, per-catalog ids out)."""
    from tasks.catalog import open_catalog
    from tasks.tables import GOLD_TABLES, SILVER_CONVERSION_EVENTS_REJECTED, SILVER_DIM_USERS, SILVER_FACT_CONVERSIONS

    catalog = open_catalog(settings, "serving")
    out = {}
    for spec in (SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS, SILVER_DIM_USERS, *GOLD_TABLES):
        rows = catalog.load_table(spec.identifier).scan().to_arrow()
        rows = rows.drop_columns([c for c in ("bronze_snapshot_id",) if c in rows.column_names])
        lines = sorted(repr(tuple((k, round(v, 9) if isinstance(v, float) else v) for k, v in sorted(r.items())))
                       for r in rows.to_pylist())
        out[spec.identifier] = {"rows": len(lines),
                                "digest": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]}
    return out


def child_run(ns) -> None:
    import resource

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
    result = {"silver_seconds": round(silver_seconds, 2), "gold_seconds": round(gold_seconds, 2),
              "bronze_records": silver["bronze_records"], "facts": silver["facts"],
              "flow_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    result["tables"] = digest_of(settings) if ns.digest else None
    Path(ns.out).write_text(json.dumps(result))


# ---- main -----------------------------------------------------------------------------------------------

def measure(settings, workdir: Path, records, partitions: int, names: dict[str, str], interval: float,
            digest: bool) -> dict:
    lake = workdir / f"lake-{partitions}"
    build_lake(lake, records)
    out = workdir / f"run-{time.time_ns()}.json"
    log = out.with_suffix(".log")
    from infra.services import prefect_env

    # the stack's Prefect server (a temporary one would start inside the first flow's time)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}, **prefect_env(settings)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "_run", "--lake", str(lake), "--out", str(out),
           "--partitions", str(partitions), *(["--digest"] if digest else [])]
    with open(log, "w") as logf, Sampler(interval) as sampler:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT).returncode
    if rc != 0 or not out.exists():
        print(f"  !! partitions={partitions} failed (rc {rc}); log {log}:\n{log.read_text()[-3000:]}", flush=True)
        return {"failed": True, "log": str(log)}
    result = json.loads(out.read_text())
    result["ray_workers_memory"] = sampler.summary(names)
    result["log"] = str(log)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="bronze records to promote (4000000, 10000000)")
    parser.add_argument("--partitions", default="1,4", help="compute_partitions values, comma-separated")
    parser.add_argument("--nodes", default="1,2", help="1: the head alone; 2: plus a second node on this machine")
    parser.add_argument("--second-node-cpus", type=int, default=1)
    parser.add_argument("--second-node-store-mb", type=int, default=1024, help="object store of the second node")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--interval", type=float, default=0.2, help="/proc sampling period, seconds")
    parser.add_argument("--no-digest", action="store_true", help="skip comparing the tables (saves time at 10M)")
    parser.add_argument("--workdir", default="/tmp/bench-scaling")
    parser.add_argument("--result", default=None, help=f"JSON to write (default {RESULT.relative_to(ROOT)})")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    records = stream(workdir, args.events, args.seed)
    settings = file_lake(workdir / "probe")
    from tasks.compute import use_ray
    from tests.integration.second_ray_node import alive_nodes, second_node

    use_ray(settings)  # the second node joins through this process's connection
    head = next(i for i, n in alive_nodes().items() if n["Resources"].get("node:__internal_head__"))
    runs: dict[str, dict] = {}
    counts = [int(p) for p in args.partitions.split(",")]
    for nodes in (int(n) for n in args.nodes.split(",")):
        def run_all(names: dict[str, str]) -> None:
            for partitions in counts:
                key = f"{nodes}-node/{partitions}-partitions"
                print(f"{key} ...", flush=True)
                runs[key] = measure(settings, workdir, records, partitions, names, args.interval, not args.no_digest)
                print(f"  {json.dumps({k: v for k, v in runs[key].items() if k not in ('tables', 'log')})}", flush=True)
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
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                    "second_node": {"cpus": args.second_node_cpus, "object_store_mb": args.second_node_store_mb}},
    }
    print(json.dumps({k: {f: v.get(f) for f in ("silver_seconds", "gold_seconds", "flow_process_peak_rss_mb",
                                                   "ray_workers_memory")} for k, v in runs.items()}, indent=1))
    print("same tables in every run:", result["same_tables_in_every_run"])
    target = Path(args.result) if args.result else RESULT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {target}")


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--out", required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--digest", action="store_true")
    ns = parser.parse_args()
    child_run(ns)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        child_main()
    else:
        main()
