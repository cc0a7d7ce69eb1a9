"""Cold and warm `lakehouse stack up` times, printed and written to benchmarks/results/stack_startup.json.

Never writes the tables of the lakehouse it is pointed at: every `up` and `down` runs on a new
temporary state folder (LAKEHOUSE_STATE_DIR; the LAKEHOUSE_* variables dropped but that and
LAKEHOUSE_CONFIG=infra/stack.toml), never on the project's .lakehouse, so its services, topic,
buckets, namespaces and Prefect database are its own; they are stopped and deleted at the end. The
services listen on the stack's ports, so it refuses to start while another stack holds one of them
(stop that one first with `lakehouse stack down`): it neither talks to nor stops another lakehouse.

- cold-state: `up` on an empty state folder, so every service is fetched/built, initialised and
  provisioned. Maven's ~/.m2 and Go's GOCACHE stay warm: that is the "later runs reuse the
  caches" case.
- warm: `down` then `up` on that same folder (binaries built, the provisioned data present), and
  once more at the end (warm_up_again_s).
- A fully cold first run on a new machine (empty caches) is dominated by the SeaweedFS Go build;
  pass --cold-caches to measure it too, on a second empty folder (about 5 minutes on 2 cores).
The runs are measured in the same process, one after the other, as peers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "stack_startup.json"
STACK_CONFIG = ROOT / "infra" / "stack.toml"


def lakehouse(state: Path, *args: str, extra_env: dict[str, str] | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env.update({"LAKEHOUSE_CONFIG": str(STACK_CONFIG), "LAKEHOUSE_STATE_DIR": str(state)})
    env.update(extra_env or {})
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "flows.cli", "stack", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return round(time.monotonic() - began, 1)


def taken_ports(state: Path) -> dict[int, str]:
    """The stack's ports something already listens on (another lakehouse's stack, say)."""
    sys.path.insert(0, str(ROOT))
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        del os.environ[key]  # the children see exactly these settings: so must this check
    from infra.process import port_in_use
    from infra.stack import Stack
    from tasks.settings import Settings, load_settings
    from tasks.stack_secrets import generate

    generate(state, list(Settings.model_fields))  # as `stack up` would, before the settings read them
    settings = load_settings(STACK_CONFIG, state_dir=str(state))
    return {port: service.name for service in Stack(settings).services
            for port in service.ports() if port_in_use("127.0.0.1", port)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold-caches", action="store_true", help="also empty GOCACHE and the Maven repo (slow)")
    args = parser.parse_args()
    figures: dict[str, object] = {"machine": f"{platform.machine()} {os.cpu_count()} cores",
                                  "state": "a new temporary state folder, never the project's .lakehouse"}

    with tempfile.TemporaryDirectory(prefix="lakehouse-startup-") as tmp:
        state = Path(tmp) / "state"
        taken = taken_ports(state)
        if taken:
            raise SystemExit(
                "ports taken: " + ", ".join(f"{port} ({name})" for port, name in sorted(taken.items()))
                + "; this benchmark starts a private stack on those ports and never stops another one:"
                " stop it first (lakehouse stack down)")
        try:
            figures["cold_state_up_s"] = lakehouse(state, "up")
            figures["down_s"] = lakehouse(state, "down")
            figures["warm_up_s"] = lakehouse(state, "up")
            lakehouse(state, "down")
            if args.cold_caches:
                fresh = Path(tmp) / "cold-caches"
                extra = {"GOCACHE": str(Path(tmp) / "gocache"), "MAVEN_OPTS": f"-Dmaven.repo.local={Path(tmp) / 'm2'}"}
                try:
                    figures["cold_caches_up_s"] = lakehouse(fresh, "up", extra_env=extra)
                finally:
                    lakehouse(fresh, "down")
            figures["warm_up_again_s"] = lakehouse(state, "up")
        finally:  # the private services, before their folder goes
            lakehouse(state, "down")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    for name, value in figures.items():
        print(f"{name:>18}: {value}")
    print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
