"""No secret leaks: after a real pipeline run, no secret value of the stack appears where it
should not.

The secrets: every SecretStr setting of the stack that is set (the generated ones of
``<state>/secrets/settings.json``: Prefect's basic-auth string, the catalog's bearer token, the
per-role S3 secrets; and infra/stack.toml's S3 secret if it holds one), Ray's token, SeaweedFS's JWT signing
keys. The Prefect credential is looked for as well in the forms it travels in: its password part
alone, and base64 (the Basic authorization header).

Where: (a) every file of the state folder (as bytes; binary files and databases too), but the
``secrets/`` folder and the few files a service must read its credential from, listed in
``ALLOWED`` with a reason; (b) the stack's Prefect: every flow run (parameters, job variables,
state messages), task run, log message, artifact, deployment (parameters, job variables), work
pool and variable; (c) ``lakehouse config show`` and ``--json`` and the output of the pipeline's
own commands; (d) what the pipeline wrote into its lake: its catalog file and every table's
metadata; (e) the command lines of the stack's service processes.

A hit fails with where it is and the bytes around it, the secret itself replaced by its name: a
leak is never printed again by the test that finds it.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import os
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from tests.conftest import ROOT, STACK_CONFIG, stack_environment

pytestmark = pytest.mark.stack

STATE = ROOT / ".lakehouse"
MAX_FILE_BYTES = 200 * 1024 * 1024  # larger files are skipped (and counted)
CHUNK = 8 * 1024 * 1024
S3_SECRETS = "S3 secret keys"  # the set of every S3 secret's name (see secret_values)


# ---- the scanner -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    where: str  # a file relative to the scanned root, or what was read (a Prefect object, a command)
    secret: str  # the secret's name, never its value
    context: str  # the bytes around it, every secret replaced by <its name>

    def __str__(self) -> str:
        return f"{self.where}: {self.secret} in ...{self.context}..."


def secret_values(settings, state_dir: Path, stack_toml: Path = STACK_CONFIG) -> dict[bytes, str]:
    """Every secret value (bytes) -> its name(s). Values shorter than 8 bytes would match by chance:
    there must be none."""
    from pydantic import SecretStr

    from tasks.stack_secrets import ray_token_path, seaweedfs_keys

    named: dict[str, str] = {}
    for field in type(settings).model_fields:
        value = getattr(settings, field)
        if isinstance(value, SecretStr) and value.get_secret_value():
            named[field] = value.get_secret_value()
    auth = named.get("prefect_api_auth_string")
    if auth:
        named["prefect_api_auth_string's password"] = auth.partition(":")[2]
        named["prefect_api_auth_string as Basic authorization"] = base64.b64encode(auth.encode()).decode()
    token = ray_token_path(state_dir)
    if token.exists():
        named["Ray's auth token"] = token.read_text().strip()
    for key, value in seaweedfs_keys(state_dir).items():
        named[f"SeaweedFS signing key {key}"] = value
    toml = tomllib.loads(stack_toml.read_text())
    if toml.get("s3_secret_access_key"):
        named[f"s3_secret_access_key of {stack_toml.name}"] = toml["s3_secret_access_key"]
    out: dict[bytes, str] = {}
    for name, value in named.items():
        if value:
            out[value.encode()] = f"{out[value.encode()]} = {name}" if value.encode() in out else name
    short = [name for value, name in out.items() if len(value) < 8]
    assert not short, f"secrets too short to search for without false hits: {short}"
    return out


def _context(data: bytes, at: int, length: int, needles: dict[bytes, str], span: int = 60) -> str:
    window = data[max(0, at - span): at + length + span]
    for value, name in needles.items():
        window = window.replace(value, f"<{name}>".encode())
    return window.decode("utf-8", "backslashreplace").replace("\n", "\\n")


def scan_bytes(where: str, data: bytes, needles: dict[bytes, str]) -> list[Hit]:
    hits = []
    for value, name in needles.items():
        at = data.find(value)
        if at >= 0:
            hits.append(Hit(where, name, _context(data, at, len(value), needles)))
    return hits


def scan_text(where: str, text: str, needles: dict[bytes, str]) -> list[Hit]:
    return scan_bytes(where, text.encode("utf-8", "surrogateescape"), needles)


def scan_file(path: Path, where: str, needles: dict[bytes, str]) -> list[Hit]:
    """The file read in chunks that overlap by the longest secret, so none is missed at a seam."""
    overlap = max(len(v) for v in needles) - 1
    found: dict[str, Hit] = {}
    with open(path, "rb") as f:
        tail = b""
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            for hit in scan_bytes(where, tail + chunk, needles):
                found.setdefault(hit.secret, hit)
            tail = (tail + chunk)[-overlap:] if overlap else b""
    return list(found.values())


@dataclass
class TreeScan:
    hits: list[Hit]
    files: int
    bytes: int
    skipped: list[str]  # too large, or gone/unreadable while scanning


def scan_tree(root: Path, needles: dict[bytes, str], exclude: Iterable[str] = (),
              max_bytes: int = MAX_FILE_BYTES) -> TreeScan:
    """Every regular file under ``root`` (symlinks not followed), but the folders ``exclude``
    (relative to root)."""
    excluded = {root / e for e in exclude}
    scan = TreeScan([], 0, 0, [])
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in excluded]
        for name in files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                size = path.stat().st_size
                if size > max_bytes:
                    scan.skipped.append(f"{rel} ({size // 2**20} MB)")
                    continue
                scan.hits += scan_file(path, rel, needles)
            except (FileNotFoundError, PermissionError) as exc:  # a service replaced it meanwhile
                scan.skipped.append(f"{rel} ({type(exc).__name__})")
                continue
            scan.files += 1
            scan.bytes += size
    return scan


def walk(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(JSON path, text) of every leaf of a JSON-like value, and every key."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key} (key)", str(key)
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from walk(item, f"{path}[{i}]")
    elif value is not None:
        yield path or ".", value if isinstance(value, str) else json.dumps(value, default=str)


def scan_object(where: str, value: Any, needles: dict[bytes, str]) -> list[Hit]:
    return [hit for path, text in walk(value) for hit in scan_text(f"{where} {path}", text, needles)]


# ---- where a secret may be ------------------------------------------------------------------------

@dataclass(frozen=True)
class Allowed:
    pattern: str  # fnmatch pattern of a path relative to the state folder ('*' crosses '/')
    secrets: str  # S3_SECRETS, or REPO_COPY
    reason: str


REPO_COPY = "what the repository's own file at the same path holds"
# Checked and NOT excepted (they hold no secret, and must not): the REST catalog's JDBC tables
# (data/iceberg-rest/catalog.db), Prefect's database (data/prefect/prefect.db and its WAL: runs,
# logs, events, artifacts), Kafka's log segments (data/kafka), SeaweedFS's volumes and filer store
# (data/seaweedfs), every service log (logs/*.log), pid files, Ray's session logs, test output.
ALLOWED = (
    Allowed("run/seaweedfs-s3.json", S3_SECRETS,
            "the S3 gateway's identities: `weed` reads every S3 key pair (admin and per role) from "
            "this file, written 0600 by infra/services.py; nothing but S3 secrets may be in it"),
    Allowed("run/ray/session_*/runtime_resources/working_dir_files/_ray_pkg_*/*", REPO_COPY,
            "Ray's copy of the project (its source and .venv) that it ships to its workers: it may "
            "hold what the repository itself holds at that path (files that quote a secret, such as "
            "Compose's development pair); never a generated secret"),
)


def is_allowed(hit: Hit, needles: dict[bytes, str], repo: Path = ROOT) -> bool:
    value = next(v for v, name in needles.items() if name == hit.secret)
    for rule in ALLOWED:
        if not fnmatch.fnmatch(hit.where, rule.pattern):
            continue
        if rule.secrets == S3_SECRETS:
            return all("s3_" in part and "secret_access_key" in part for part in hit.secret.split(" = "))
        if rule.secrets == REPO_COPY:
            inside = hit.where.split("/_ray_pkg_", 1)[1].split("/", 1)
            original = repo / inside[1] if len(inside) == 2 else None
            try:
                return original is not None and original.is_file() and value in original.read_bytes()
            except OSError:
                return False
    return False


def redact(text: str, needles: dict[bytes, str]) -> str:
    """``text`` with every secret replaced by <its name>: for failure messages."""
    for value, name in needles.items():
        text = text.replace(value.decode(), f"<{name}>")
    return text


def report(hits: list[Hit], what: str) -> str:
    return f"secret values found in {what}:\n" + "\n".join(f"  {hit}" for hit in hits)


# ---- the scanner finds what is there --------------------------------------------------------------

def test_the_scanner_finds_a_planted_secret_and_honours_only_the_listed_exceptions(tmp_path):
    """Without this, a scan that finds nothing proves nothing."""
    planted = b"planted-" + uuid.uuid4().hex.encode()
    s3 = b"s3-" + uuid.uuid4().hex.encode()
    needles = {planted: "catalog_token", s3: "s3_ingest_secret_access_key"}
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "service.log").write_text(f"INFO starting with token={planted.decode()}\n")
    # binary, and the secret across the seam of two read chunks
    (tmp_path / "data.bin").write_bytes(os.urandom(CHUNK - 5) + planted + os.urandom(100))
    (tmp_path / "clean.txt").write_text("nothing to see " * 1000)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "settings.json").write_bytes(b'{"catalog_token": "' + planted + b'"}')
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "seaweedfs-s3.json").write_bytes(b'{"secretKey": "' + s3 + b'", "x": "' + planted + b'"}')
    with open(tmp_path / "big.bin", "wb") as big:  # sparse: larger than the limit, skipped
        big.write(planted)
        big.truncate(CHUNK + 4096)

    scan = scan_tree(tmp_path, needles, exclude=["secrets"], max_bytes=CHUNK + 1024)
    found = {(h.where, h.secret) for h in scan.hits}
    assert found == {("logs/service.log", "catalog_token"), ("data.bin", "catalog_token"),
                     ("run/seaweedfs-s3.json", "catalog_token"),
                     ("run/seaweedfs-s3.json", "s3_ingest_secret_access_key")}
    assert scan.skipped == ["big.bin (8 MB)"] and scan.files == 4
    log_hit = next(h for h in scan.hits if h.where == "logs/service.log")
    assert "token=<catalog_token>" in log_hit.context and planted.decode() not in str(log_hit)
    leaks = {(h.where, h.secret) for h in scan.hits if not is_allowed(h, needles, repo=tmp_path)}
    # the S3 identities file may hold an S3 secret, not the catalog token
    assert leaks == found - {("run/seaweedfs-s3.json", "s3_ingest_secret_access_key")}
    # a Ray copy of the project: only what the repository's file holds too
    pkg = "run/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_abc/infra/stack.toml"
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "stack.toml").write_bytes(b"s3_secret_access_key = '" + s3 + b"'")
    assert is_allowed(Hit(pkg, "s3_ingest_secret_access_key", ""), needles, repo=tmp_path)
    assert not is_allowed(Hit(pkg, "catalog_token", ""), needles, repo=tmp_path)
    assert scan_object("flow run x", {"parameters": {"settings": {"token": planted.decode()}}}, needles)[0].where \
        == "flow run x .parameters.settings.token"


# ---- a real pipeline run, then the scans ------------------------------------------------------------

@pytest.fixture(scope="module")
def needles(stack_settings) -> dict[bytes, str]:
    values = secret_values(stack_settings, STATE)
    names = " = ".join(values.values())
    for expected in ("prefect_api_auth_string", "catalog_token", "Ray's auth token", "SeaweedFS signing key",
                     "s3_ingest_secret_access_key", "s3_secret_access_key"):
        assert expected in names, f"the stack has no {expected}: is it up with its generated secrets?"
    return values


@pytest.fixture(scope="module")
def pipeline(stack_settings, needles, tmp_path_factory):
    """A few hundred events through ingest, silver and gold, run as `lakehouse run ...` commands
    in a lakehouse of their own (SQLite catalog, own buckets and topic) on the stack's S3, Kafka,
    Ray and Prefect: their flow runs, logs and artifacts land in the stack's Prefect."""
    from tasks.simulator import TrafficProfile, produce
    from tests.integration.private_lakehouse import lake_environment, s3_lake

    folder = tmp_path_factory.mktemp("secret-scan")
    lake = s3_lake(stack_settings, folder, "scan", f"it-scan-{uuid.uuid4().hex[:8]}")
    sent = produce(lake, TrafficProfile(events=400, seed=23, days=2, end=datetime.now(timezone.utc)))
    assert sent.events == 400
    outputs = {}
    for command in (("run", "ingest", "--until-caught-up"), ("run", "silver"), ("run", "gold")):
        done = subprocess.run([sys.executable, "-m", "flows.cli", *command], env=lake_environment(lake), cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
        outputs["lakehouse " + " ".join(command)] = done
        assert done.returncode == 0, f"lakehouse {' '.join(command)} failed: {redact(done.stderr[-3000:], needles)}"
    return lake, folder, outputs


def test_no_secret_in_the_state_folder(pipeline, needles):
    scan = scan_tree(STATE, needles, exclude=["secrets"])
    assert scan.files > 100 and scan.bytes > 10 * 2**20, f"scanned only {scan.files} files, {scan.bytes} bytes"
    leaks = [hit for hit in scan.hits if not is_allowed(hit, needles)]
    assert not leaks, report(leaks, f"the state folder {STATE} (skipped: {scan.skipped})")
    # the files that may hold a credential hold it for their owner only
    for rule in ALLOWED:
        if rule.secrets == S3_SECRETS:
            for path in STATE.glob(rule.pattern):
                mode = path.stat().st_mode & 0o777
                assert mode & 0o077 == 0, f"{path} holds S3 secrets and is readable by others ({oct(mode)})"
    allowed = sorted({f"{hit.where.split('/_ray_pkg_')[0]}/...: {hit.secret}" if "/_ray_pkg_" in hit.where
                      else f"{hit.where}: {hit.secret}" for hit in scan.hits})
    print(f"\nstate folder: {scan.files} files, {scan.bytes / 2**20:.0f} MB scanned; skipped: {scan.skipped}; "
          f"{len(scan.hits)} allowed hit(s):\n  " + "\n  ".join(allowed))


async def _prefect_objects() -> dict[str, list]:
    """Everything the stack's Prefect holds that a secret could end up in, paged through."""
    from prefect.client.orchestration import get_client

    async def every(read, **kwargs):
        out, offset = [], 0
        while True:
            page = await read(limit=200, offset=offset, **kwargs)
            out += page
            offset += len(page)
            if len(page) < 200:
                return out

    async with get_client() as client:
        return {
            "flow run": await every(client.read_flow_runs),
            "task run": await every(client.read_task_runs),
            "log": await every(client.read_logs),
            "artifact": await every(client.read_artifacts),
            "deployment": await every(client.read_deployments),
            "work pool": await every(client.read_work_pools),
            "variable": await client.read_variables(),
        }


def test_no_secret_in_prefect(pipeline, needles, stack_settings):
    lake, _, _ = pipeline
    objects = asyncio.run(_prefect_objects())
    # the scan sees the pipeline's own runs, with their logs
    ours = [run for run in objects["flow run"]
            if (run.parameters.get("settings") or {}).get("bucket_prefix") == lake.bucket_prefix]
    assert len(ours) >= 3, "the pipeline's ingest, silver and gold runs are not in Prefect"
    ours_ids = {run.id for run in ours}
    assert any(log.flow_run_id in ours_ids for log in objects["log"]), "the pipeline's runs logged nothing"
    leaks = []
    for kind, items in objects.items():
        for item in items:
            label = getattr(item, "name", None) or getattr(item, "key", None) or ""
            data = item.model_dump(mode="json")
            leaks += scan_object(f"Prefect {kind} {label} {getattr(item, 'id', '')}".replace("  ", " "), data, needles)
    assert not leaks, report(leaks, f"the Prefect server at {stack_settings.prefect_api_url}")
    print("\nPrefect: " + ", ".join(f"{len(v)} {k}s" for k, v in objects.items()))


def test_no_secret_in_config_show_or_command_output(pipeline, needles):
    _, _, outputs = pipeline
    leaks = []
    for args in (("config", "show"), ("config", "show", "--json")):
        done = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=stack_environment(), cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, redact(done.stderr[-2000:], needles)
        masked = any(f in done.stdout for f in ("LAKEHOUSE_CATALOG_TOKEN=**********",
                                                '"LAKEHOUSE_CATALOG_TOKEN": "**********"'))
        assert masked, f"`lakehouse {' '.join(args)}` does not show the catalog token masked"  # no output shown
        outputs = {**outputs, "lakehouse " + " ".join(args): done}
    for command, done in outputs.items():
        leaks += scan_text(f"stdout of `{command}`", done.stdout, needles)
        leaks += scan_text(f"stderr of `{command}`", done.stderr, needles)
    assert not leaks, report(leaks, "the output of lakehouse commands")


def test_no_secret_in_what_the_pipeline_wrote_to_its_lake(pipeline, needles):
    """Its catalog file and every table's metadata (properties, snapshot summaries): a writer's
    S3 or catalog credential must not travel into what every reader of the table sees."""
    from tasks.catalog import open_catalog

    lake, folder, _ = pipeline
    scan = scan_tree(folder, needles)
    leaks = list(scan.hits)
    catalog = open_catalog(lake, "serving")
    tables = [t for ns in catalog.list_namespaces() for t in catalog.list_tables(ns)]
    assert len(tables) >= 3, tables
    for identifier in tables:
        table = catalog.load_table(identifier)
        leaks += scan_object(f"table {'.'.join(identifier)} metadata", table.metadata.model_dump(mode="json"), needles)
    assert not leaks, report(leaks, "the pipeline's lake")


def test_no_secret_on_a_service_command_line(needles):
    """`ps` shows every user's command lines: the stack's services and everything they started
    (the worker's flow runs, Ray's workers) get their credentials from files and environment."""
    def tree(pid: int) -> Iterator[int]:
        yield pid
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                children = task.read_text().split()
            except OSError:
                continue
            for child in children:
                yield from tree(int(child))

    leaks, seen = [], 0
    for pidfile in sorted((STATE / "run").glob("*.pid")):
        try:
            root = json.loads(pidfile.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            continue
        for pid in tree(root):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            seen += 1
            leaks += scan_bytes(f"command line of pid {pid} ({pidfile.stem})", argv, needles)
    assert seen >= 5, f"found only {seen} processes of the stack's services"
    assert not leaks, report(leaks, "command lines")
