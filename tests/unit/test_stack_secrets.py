"""The stack's generated secrets, how settings read them, and the loopback rules of settings and
``stack up``. Pure: files in a tmp folder, no service."""

from __future__ import annotations

import base64
import json
import stat

import pytest

from infra.services import Kafka, PrefectServer, RayHead, prefect_auth_header, prefect_env, seaweedfs_security_env
from infra.stack import check_bind_host, is_loopback_host
from tasks.catalog import catalog_properties
from tasks.compute import ray_client_env
from tasks.settings import Settings, SettingsError, load_settings
from tasks.stack_secrets import generate, read_values, secrets_dir

FIELDS = list(Settings.model_fields)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Only what a test passes: `make test` exports LAKEHOUSE_CONFIG=infra/stack.toml."""
    import os

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_makes_private_files_once(tmp_path):
    created = generate(tmp_path, FIELDS)
    folder = secrets_dir(tmp_path)
    assert _mode(folder) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["ray-auth-token", "seaweedfs-keys.json", "settings.json"]
    assert all(_mode(p) == 0o600 for p in folder.iterdir())
    values = json.loads((folder / "settings.json").read_text())
    assert "prefect_api_auth_string" in created and "catalog_token" in created
    user, _, password = values["prefect_api_auth_string"].partition(":")
    assert user == "lakehouse" and len(password) >= 24
    # one distinct pair per role the settings declare
    roles = [f.removeprefix("s3_").removesuffix("_access_key_id") for f in FIELDS
             if f.endswith("_access_key_id") and f != "s3_access_key_id"]
    assert roles, "the settings declare per-role S3 pairs"
    secrets = {values[f"s3_{r}_secret_access_key"] for r in roles}
    assert len(secrets) == len(roles)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert generate(tmp_path, FIELDS) == []  # never replaced: running services hold them
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_settings_read_generated_secrets_below_file_and_environment(tmp_path, monkeypatch):
    generate(tmp_path, FIELDS)
    values = read_values(tmp_path)
    s = load_settings(None, state_dir=str(tmp_path))
    assert s.prefect_api_auth_string.get_secret_value() == values["prefect_api_auth_string"]
    assert s.catalog_token.get_secret_value() == values["catalog_token"]
    # masked wherever settings are shown; present only for child processes
    shown = json.dumps(s.redacted())
    assert values["catalog_token"] not in shown and values["prefect_api_auth_string"] not in shown
    assert s.as_env()["LAKEHOUSE_CATALOG_TOKEN"] == values["catalog_token"]
    # the file and the environment win
    config = tmp_path / "c.toml"
    config.write_text('catalog_token = "from-file"\n')
    assert load_settings(config, state_dir=str(tmp_path)).catalog_token.get_secret_value() == "from-file"
    monkeypatch.setenv("LAKEHOUSE_CATALOG_TOKEN", "from-env")
    assert load_settings(config, state_dir=str(tmp_path)).catalog_token.get_secret_value() == "from-env"


def test_unreadable_secrets_file_names_the_key(tmp_path):
    generate(tmp_path, FIELDS)
    (secrets_dir(tmp_path) / "settings.json").write_text("{not json")
    with pytest.raises(SettingsError) as err:
        load_settings(None, state_dir=str(tmp_path))
    assert err.value.key == "LAKEHOUSE_STATE_DIR" and "settings.json" in err.value.message


@pytest.mark.parametrize("key, value", [
    ("kafka_bootstrap", "0.0.0.0:9092"),
    ("kafka_bootstrap", "127.0.0.1:9092,[::]:9093"),
    ("prefect_api_url", "http://0.0.0.0:4200/api"),
    ("catalog_uri", "http://[::]:8181"),
    ("s3_endpoint", "http://0.0.0.0:8333"),
])
def test_wildcard_hosts_need_the_opt_in(tmp_path, key, value):
    base = {"profile": "stack", "s3_access_key_id": "a", "s3_secret_access_key": "b", "state_dir": str(tmp_path)}
    with pytest.raises(SettingsError) as err:
        load_settings(None, **base, **{key: value})
    assert err.value.key == f"LAKEHOUSE_{key.upper()}" and "stack_allow_remote_bind" in err.value.message
    assert load_settings(None, **base, **{key: value}, stack_allow_remote_bind=True)


def test_stack_up_refuses_a_non_loopback_host(tmp_path):
    s = load_settings(None, state_dir=str(tmp_path), kafka_bootstrap="192.0.2.7:9092")
    with pytest.raises(SettingsError) as err:
        check_bind_host(Kafka(s), s)
    assert err.value.key == "LAKEHOUSE_KAFKA_BOOTSTRAP" and "192.0.2.7" in err.value.message
    opted = s.model_copy(update={"stack_allow_remote_bind": True})
    check_bind_host(Kafka(opted), opted)
    loopback = load_settings(None, state_dir=str(tmp_path))
    check_bind_host(PrefectServer(loopback), loopback)
    check_bind_host(RayHead(loopback), loopback)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True),
                                            ("::1", True), ("[::1]", True), ("0.0.0.0", False),
                                            ("10.0.0.1", False), ("example.org", False)])
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


def test_ray_environment_keeps_ray_on_loopback_in_a_private_folder(tmp_path):
    short = load_settings(None, state_dir="/tmp/lh")
    env = ray_client_env(short)
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_TMPDIR"] == "/tmp/lh/run"
    assert env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] == "0"  # workers run in this environment, not a uv copy
    deep = tmp_path / ("x" * 80) / "state"
    s = load_settings(None, state_dir=str(deep))
    env = ray_client_env(s, create=True)
    root = env["RAY_TMPDIR"]
    # Ray's longest socket: <root>/ray/session_<date>_<time>_<pid>/sockets/plasma_store (max 107)
    assert len(f"{root}/ray/session_2026-11-30_16-55-16_750442_4194304/sockets/plasma_store") <= 107
    assert _mode(__import__("pathlib").Path(root)) == 0o700
    token = __import__("pathlib").Path(env["RAY_AUTH_TOKEN_PATH"])
    assert token.is_file() and _mode(token) == 0o600 and str(token).startswith(str(deep))
    opted = ray_client_env(s.model_copy(update={"stack_allow_remote_bind": True}))
    assert opted["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
    assert opted["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] == "1"  # other nodes need the environment shipped


def test_clients_carry_the_prefect_and_catalog_credentials(tmp_path):
    s = load_settings(None, state_dir=str(tmp_path), prefect_api_auth_string="lakehouse:pw",
                      profile="stack", s3_access_key_id="a", s3_secret_access_key="b", catalog_token="tok")
    assert prefect_env(s)["PREFECT_API_AUTH_STRING"] == "lakehouse:pw"
    assert prefect_auth_header(s) == {"Authorization": "Basic " + base64.b64encode(b"lakehouse:pw").decode()}
    assert catalog_properties(s)["token"] == "tok"
    oauth = s.model_copy(update={"catalog_token": None, "catalog_credential": __import__("pydantic").SecretStr("id:sec"),
                                 "catalog_oauth2_server_uri": "https://auth.example/token", "catalog_scope": "PRINCIPAL_ROLE:ALL"})
    props = catalog_properties(oauth)
    assert (props["credential"], props["oauth2-server-uri"], props["scope"]) == ("id:sec", "https://auth.example/token", "PRINCIPAL_ROLE:ALL")
    assert "token" not in props
    bare = load_settings(None, state_dir=str(tmp_path / "none"))
    assert "PREFECT_API_AUTH_STRING" not in prefect_env(bare) and prefect_auth_header(bare) == {}


def test_seaweedfs_gets_signing_keys_once_generated(tmp_path):
    s = load_settings(None, state_dir=str(tmp_path), profile="stack", s3_access_key_id="a", s3_secret_access_key="b")
    assert seaweedfs_security_env(s) == {}
    generate(tmp_path, FIELDS)
    env = seaweedfs_security_env(s)
    keys = json.loads((secrets_dir(tmp_path) / "seaweedfs-keys.json").read_text())
    assert {env["WEED_JWT_SIGNING_KEY"], env["WEED_JWT_SIGNING_READ_KEY"], env["WEED_JWT_FILER_SIGNING_KEY"],
            env["WEED_JWT_FILER_SIGNING_READ_KEY"]} == set(keys.values())
    assert env["WEED_FILER_EXPOSE_DIRECTORY_METADATA_ENABLED"] == "false"
