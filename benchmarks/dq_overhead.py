"""Data-quality overhead on a 1M-record silver promotion: the same promotion with and without the
suites (``dq_enabled``), measured in the same run.

    .venv/bin/python benchmarks/dq_overhead.py [--events 1000000] [--history 200000] [--days 7]
        [--rounds 2] [--workdir /tmp/bench-dq]

One simulator stream (5% duplicates, 2% malformed, 1% late; benchmarks/silver_promotion.py's
generator) is cached in the workdir. A PRIVATE lakehouse (SQLite catalog, file warehouse under the
workdir: benchmarks/private_lake.file_lake) holds ``--history`` records' facts in silver and the
next ``--events`` records in bronze; its catalog is restored before every run, so every run
promotes the same increment into the same silver. Each run is a subprocess on Daft's native runner
with its commit events and artifacts renamed (private_lake.isolate_prefect), alternating without
and with the suites, ``--rounds`` times each. Great Expectations is imported before the clock
starts (a warm worker has it loaded); its cold import is timed on its own.

Never writes the tables of the lakehouse it is pointed at. Writes benchmarks/results/dq_overhead.json.
Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from private_lake import file_lake, isolate_prefect  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "dq_overhead.json"
TARGET = 0.15


def child(ns) -> None:
    """One silver promotion of the private lake, with or without the suites; prints JSON."""
    lake = Path(ns.lake)
    settings = file_lake(lake, ray_address="").model_copy(update={"dq_enabled": ns.dq == "on"})
    from infra.services import prefect_env

    # the stack's Prefect server (and its credential), set before Prefect reads its settings
    os.environ.update({k: v for k, v in prefect_env(settings).items() if k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")})
    isolate_prefect(settings)
    import daft

    import tasks.compute as compute

    daft.set_runner_native()
    compute._configured = "native"  # silver_flow's use_ray() becomes a no-op
    t = time.monotonic()
    import great_expectations  # noqa: F401 - loaded before the clock, as in a warm worker

    gx_import = time.monotonic() - t
    import flows.silver as fs

    spent = {"dq": 0.0}
    check = fs.check_new_facts

    def timed(*args, **kwargs):
        began = time.monotonic()
        try:
            return check(*args, **kwargs)
        finally:
            spent["dq"] += time.monotonic() - began

    fs.check_new_facts = timed
    began = time.monotonic()
    report = fs.silver_flow(settings=settings)
    flow_seconds = time.monotonic() - began
    print(json.dumps({"dq": ns.dq, "flow_seconds": round(flow_seconds, 3), "dq_task_seconds": round(spent["dq"], 3),
                      "gx_import_seconds": round(gx_import, 3), "facts": report["facts"],
                      "rejected": report["rejected"], "bronze_records": report["bronze_records"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="new bronze records to promote")
    parser.add_argument("--history", type=int, default=200_000, help="records already in silver")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=2, help="runs without and with the suites, each")
    parser.add_argument("--workdir", default="/tmp/bench-dq")
    parser.add_argument("--result", default=str(RESULT))
    sub = parser.add_subparsers(dest="mode")
    one = sub.add_parser("child")
    one.add_argument("--lake", required=True)
    one.add_argument("--dq", choices=("on", "off"), required=True)
    ns = parser.parse_args()
    if ns.mode == "child":
        child(ns)
        return

    from silver_promotion import build_lakehouse, generate_stream, read_stream, reset

    work = Path(ns.workdir)
    work.mkdir(parents=True, exist_ok=True)
    total = ns.history + ns.events
    stream = work / f"stream-{total}-{ns.days}-{ns.seed}.parquet"
    setup: dict = {}
    if not stream.exists():
        setup["generate"] = generate_stream(stream, total, ns.days, ns.seed)
    lake = work / "lake"
    if not (lake / "catalog.pristine.db").exists():
        setup["lake"] = build_lakehouse(lake, read_stream(stream, 0, ns.history), read_stream(stream, ns.history, total))
    load = os.getloadavg()[0]
    runs = []
    for _ in range(ns.rounds):
        for dq in ("off", "on"):
            reset(lake)
            done = subprocess.run([sys.executable, __file__, "child", "--lake", str(lake), "--dq", dq],
                                  cwd=ROOT, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"the {dq} run failed (exit {done.returncode})")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(f"dq {dq}: {run['flow_seconds']:.1f} s flow, {run['dq_task_seconds']:.1f} s in the suite "
                  f"({run['facts']} facts, {run['rejected']} rejected)", flush=True)
    off = statistics.median(r["flow_seconds"] for r in runs if r["dq"] == "off")
    on = statistics.median(r["flow_seconds"] for r in runs if r["dq"] == "on")
    suite = statistics.median(r["dq_task_seconds"] for r in runs if r["dq"] == "on")
    overhead = on / off - 1
    result = {
        "benchmark": "dq_overhead", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1m_at_start": round(load, 2),
        "params": {"events": ns.events, "history": ns.history, "days": ns.days, "seed": ns.seed, "rounds": ns.rounds,
                   "runner": "native", "rates": {"duplicate": 0.05, "malformed": 0.02, "late": 0.01}},
        "setup": setup, "runs": runs,
        "median_flow_seconds": {"without_dq": round(off, 3), "with_dq": round(on, 3)},
        "median_suite_task_seconds": round(suite, 3),
        "overhead": round(overhead, 4), "suite_share_of_with_dq_run": round(suite / on, 4),
        "target_overhead_max": TARGET, "met": overhead <= TARGET,
        "gx_cold_import_seconds": statistics.median(r["gx_import_seconds"] for r in runs),
        "machine": {"cpus": os.cpu_count()},
    }
    Path(ns.result).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.result).write_text(json.dumps(result, indent=1) + "\n")
    print(f"without the suites {off:.1f} s, with {on:.1f} s: overhead {overhead:+.1%} (target <= {TARGET:.0%}); "
          f"the suite task {suite:.1f} s; wrote {ns.result}")
    from tasks.quality.docs import docs_folder

    shutil.rmtree(docs_folder(file_lake(lake, ray_address="")), ignore_errors=True)  # this private lake's pages only


if __name__ == "__main__":
    main()
