"""Cold and warm `lakehouse stack up` times, printed and written to benchmarks/results/stack_startup.json.

- warm: `down` then `up` on the existing state folder (binaries built, data present).
- cold-state: `up` on an empty state folder, so every service is fetched/built, initialised and
  provisioned again. Maven's ~/.m2 and Go's GOCACHE stay warm: that is the "later runs reuse the
  caches" case. A fully cold first run on a new machine (empty caches) is dominated by the
  SeaweedFS Go build; pass --cold-caches to measure it too (about 5 minutes on 2 cores).
The two runs are measured in the same process, one after the other, as peers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "stack_startup.json"


def lakehouse(state: Path, *args: str, extra_env: dict[str, str] | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env.update({"LAKEHOUSE_CONFIG": str(ROOT / "infra" / "stack.toml"), "LAKEHOUSE_STATE_DIR": str(state)})
    env.update(extra_env or {})
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "flows.cli", "stack", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return round(time.monotonic() - began, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold-caches", action="store_true", help="also empty GOCACHE and the Maven repo (slow)")
    args = parser.parse_args()
    state = ROOT / ".lakehouse"
    figures: dict[str, object] = {"machine": f"{platform.machine()} {os.cpu_count()} cores"}

    lakehouse(state, "up")
    figures["down_s"] = lakehouse(state, "down")
    figures["warm_up_s"] = lakehouse(state, "up")
    lakehouse(state, "down")

    with tempfile.TemporaryDirectory(prefix="lakehouse-cold-") as tmp:
        fresh = Path(tmp) / "state"
        extra: dict[str, str] = {}
        if args.cold_caches:
            extra = {"GOCACHE": str(Path(tmp) / "gocache"), "MAVEN_OPTS": f"-Dmaven.repo.local={Path(tmp) / 'm2'}"}
        key = "cold_caches_up_s" if args.cold_caches else "cold_state_up_s"
        figures[key] = lakehouse(fresh, "up", extra_env=extra)
        lakehouse(fresh, "down")
        shutil.rmtree(fresh, ignore_errors=True)

    figures["warm_up_again_s"] = lakehouse(state, "up")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    for name, value in figures.items():
        print(f"{name:>18}: {value}")
    print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
