"""infra/docker-compose.yml must stay a valid Compose file (the client is here, the engine is not)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "infra" / "docker-compose.yml"


PLUGIN_DIR = ROOT / ".lakehouse" / "docker"  # `make compose` builds the plugin there


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker client is not installed")
def test_compose_config_is_valid():
    env = dict(os.environ)
    if (PLUGIN_DIR / "cli-plugins" / "docker-compose").exists():
        env["DOCKER_CONFIG"] = str(PLUGIN_DIR)
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr


def test_compose_offers_the_same_services_ports_and_credentials():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"kafka", "seaweedfs", "iceberg-rest", "prefect-server", "prefect-worker", "ray-head"} <= set(services)
    published = {p for s in services.values() for p in s.get("ports", [])}
    for port in ("9092", "8333", "8181", "4200", "6379"):
        assert f"127.0.0.1:{port}:{port}" in published
    # Compose has no `stack up` to generate keys: its catalog uses the one identity of its SeaweedFS
    [identity] = json.loads((ROOT / "infra" / "seaweedfs" / "s3.json").read_text())["identities"]
    [pair] = identity["credentials"]
    assert services["iceberg-rest"]["environment"]["AWS_ACCESS_KEY_ID"] == pair["accessKey"]
    assert services["iceberg-rest"]["environment"]["AWS_SECRET_ACCESS_KEY"] == pair["secretKey"]
