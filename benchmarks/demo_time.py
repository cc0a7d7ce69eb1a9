"""Cold and warm wall time of `lakehouse demo`, printed and written to benchmarks/results/demo_time.json.

cold: a new, empty state folder (services initialised, deployments created, an empty lakehouse);
      the Maven, Go and uv caches are warm, as on any machine after its first install.
warm: the same command again on that state folder, with the services still running.
Both runs are measured in the same process, one after the other.

Never writes the tables of the lakehouse it is pointed at: ``lakehouse demo`` builds a whole
lakehouse by design, so it runs with the LAKEHOUSE_* variables dropped but LAKEHOUSE_STATE_DIR, a
new temporary folder (and, for --profile stack, LAKEHOUSE_CONFIG=infra/stack.toml): its own catalog
and warehouse (embedded) or its own SeaweedFS, REST catalog and Ray head (--profile stack), its own
Kafka, Prefect server, worker and deployments, on the default ports. If one of those ports is taken
(the lakehouse's own stack is up), ``stack up`` refuses and so does this benchmark: it never talks to
another lakehouse's services. Its services are stopped (``stack down`` on that folder) before the
folder is deleted, even after a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "demo_time.json"


def run(state: Path, profile: str, events: int, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env["LAKEHOUSE_STATE_DIR"] = str(state)
    if profile == "stack":
        env["LAKEHOUSE_CONFIG"] = str(ROOT / "infra" / "stack.toml")
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "flows.cli", *args, "--events", str(events)] if args[0] == "demo"
                   else [sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return round(time.monotonic() - began, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=("embedded", "stack"), default="embedded")
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lakehouse-demo-") as tmp:
        state = Path(tmp) / "state"
        try:
            figures = {
                "profile": args.profile,
                "events": args.events,
                "cold_s": run(state, args.profile, args.events, "demo"),
                "warm_s": run(state, args.profile, args.events, "demo"),
            }
        finally:  # the private services, before their folder goes
            run(state, args.profile, args.events, "stack", "down")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    for name, value in figures.items():
        print(f"{name:>8}: {value}")


if __name__ == "__main__":
    main()
