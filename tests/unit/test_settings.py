"""Settings: defaults per profile, precedence, and one clear error per bad value."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tasks.settings import SettingsError, load_settings
from tests.conftest import ROOT, stack_environment

SECRET = "lakehouse-secret"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LAKEHOUSE_STATE_DIR", str(tmp_path / "state"))


def test_stack_profile_without_keys_says_stack_up_makes_them(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_CONFIG", str(ROOT / "infra" / "stack.toml"))
    with pytest.raises(SettingsError) as err:
        load_settings()  # a fresh state folder: nothing generated yet
    assert err.value.key == "LAKEHOUSE_S3_ACCESS_KEY_ID" and "stack up" in err.value.message


def test_embedded_is_the_default_and_needs_no_secret(tmp_path):
    s = load_settings()
    assert s.profile == "embedded"
    assert s.catalog_type == "sql"
    assert s.catalog_uri == f"sqlite:///{tmp_path / 'state' / 'catalog.db'}"
    assert s.warehouse.startswith("file://")
    assert s.ray_address == ""
    assert s.layer_location("silver").endswith("/lakehouse-silver/silver")


def test_stack_profile_defaults(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_PROFILE", "stack")
    monkeypatch.setenv("LAKEHOUSE_S3_ACCESS_KEY_ID", "lakehouse")
    monkeypatch.setenv("LAKEHOUSE_S3_SECRET_ACCESS_KEY", SECRET)
    s = load_settings()
    assert (s.catalog_type, s.catalog_uri, s.s3_endpoint, s.ray_address) == (
        "rest", "http://127.0.0.1:8181", "http://127.0.0.1:8333", "auto")
    assert s.layer_location("gold") == "s3://lakehouse-gold/gold"


def test_environment_overrides_the_file(monkeypatch, tmp_path):
    config = tmp_path / "lakehouse.toml"
    config.write_text('kafka_topic = "from-file"\nkafka_partitions = 6\n')
    monkeypatch.setenv("LAKEHOUSE_KAFKA_TOPIC", "from-env")
    s = load_settings(config)
    assert (s.kafka_topic, s.kafka_partitions) == ("from-env", 6)


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(Exception):
        s.kafka_topic = "other"  # type: ignore[misc]


def test_secrets_never_appear_in_repr_or_redacted(monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_CONFIG", str(ROOT / "infra" / "stack.toml"))
    monkeypatch.setenv("LAKEHOUSE_S3_ACCESS_KEY_ID", "lakehouse")
    monkeypatch.setenv("LAKEHOUSE_S3_SECRET_ACCESS_KEY", SECRET)
    s = load_settings()
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())
    assert s.redacted()["LAKEHOUSE_S3_SECRET_ACCESS_KEY"] == "**********"
    assert SECRET not in str(s.redacted())


@pytest.mark.parametrize(
    "env, key",
    [
        ({"LAKEHOUSE_PROFILE": "production"}, "LAKEHOUSE_PROFILE"),
        ({"LAKEHOUSE_S3_ENDPOINT": "htp//127.0.0.1:8333", "LAKEHOUSE_PROFILE": "stack"}, "LAKEHOUSE_S3_ENDPOINT"),
        ({"LAKEHOUSE_CATALOG_URI": "http://host:port", "LAKEHOUSE_CATALOG_TYPE": "rest"}, "LAKEHOUSE_CATALOG_URI"),
        ({"LAKEHOUSE_PREFECT_API_URL": "localhost:4200"}, "LAKEHOUSE_PREFECT_API_URL"),
        ({"LAKEHOUSE_KAFKA_BOOTSTRAP": "127.0.0.1"}, "LAKEHOUSE_KAFKA_BOOTSTRAP"),
        ({"LAKEHOUSE_KAFKA_PARTITIONS": "zero"}, "LAKEHOUSE_KAFKA_PARTITIONS"),
        ({"LAKEHOUSE_PROFILE": "stack", "LAKEHOUSE_S3_ACCESS_KEY_ID": "k"}, "LAKEHOUSE_S3_SECRET_ACCESS_KEY"),
        ({"LAKEHOUSE_PROFILE": "stack", "LAKEHOUSE_S3_SECRET_ACCESS_KEY": SECRET}, "LAKEHOUSE_S3_ACCESS_KEY_ID"),
        ({"LAKEHOUSE_CONFIG": "/nonexistent/lakehouse.toml"}, "LAKEHOUSE_CONFIG"),
    ],
)
def test_bad_value_names_its_key(monkeypatch, env, key):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.key == key
    assert SECRET not in str(info.value)


def test_unknown_key_in_file_is_named(tmp_path):
    config = tmp_path / "lakehouse.toml"
    config.write_text('kafka_topik = "typo"\n')
    with pytest.raises(SettingsError, match="kafka_topik"):
        load_settings(config)


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_cli_bad_value_exits_2_with_one_line_naming_the_key(tmp_path):
    env = {**stack_environment(), "LAKEHOUSE_STATE_DIR": str(tmp_path), "LAKEHOUSE_PROFILE": "prod"}
    result = _cli(["config", "show"], env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "LAKEHOUSE_PROFILE" in result.stderr and "Traceback" not in result.stderr


def test_cli_missing_secret_exits_2(tmp_path):
    env = {k: v for k, v in stack_environment().items() if k != "LAKEHOUSE_CONFIG"}
    env.update({"LAKEHOUSE_STATE_DIR": str(tmp_path), "LAKEHOUSE_PROFILE": "stack", "LAKEHOUSE_S3_ACCESS_KEY_ID": "k"})
    result = _cli(["config", "show"], env)  # `stack ...` would generate the local stack's keys first
    assert result.returncode == 2
    assert result.stderr.startswith("error: LAKEHOUSE_S3_SECRET_ACCESS_KEY")


def test_cli_stack_commands_generate_the_keys_they_need(tmp_path):
    env = {k: v for k, v in stack_environment().items() if k != "LAKEHOUSE_CONFIG"}
    env.update({"LAKEHOUSE_STATE_DIR": str(tmp_path), "LAKEHOUSE_CONFIG": str(ROOT / "infra" / "stack.toml")})
    assert _cli(["config", "show"], env).returncode == 2  # nothing generated yet
    _cli(["stack", "status"], env)
    shown = _cli(["config", "show"], env)
    assert shown.returncode == 0, shown.stderr
    assert "LAKEHOUSE_S3_SECRET_ACCESS_KEY=**********" in shown.stdout


def test_cli_port_already_taken_exits_2_naming_the_key(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**stack_environment(), "LAKEHOUSE_STATE_DIR": str(tmp_path),
               "LAKEHOUSE_S3_ENDPOINT": f"http://127.0.0.1:{port}"}
        # The build step is never reached: the port check comes first.
        result = _cli(["stack", "up", "seaweedfs"], env)
    assert result.returncode == 2, result.stderr
    assert "LAKEHOUSE_S3_ENDPOINT" in result.stderr and f"port {port}" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
