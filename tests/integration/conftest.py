"""Fixtures of the integration tier."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tasks.catalog import ensure_namespaces, open_catalog
from tasks.settings import Settings, load_settings
from tests.integration.private_lakehouse import private_env


@pytest.fixture
def private(tmp_path, monkeypatch, stack_settings):
    """Settings of a private lakehouse (SQLite catalog, file warehouse) on the stack's Prefect and Ray."""
    return open_private_lakehouse(tmp_path, monkeypatch)


def open_private_lakehouse(folder: Path, monkeypatch) -> Settings:
    """A private lakehouse with its catalog and warehouse in ``folder``: this process's LAKEHOUSE_*
    environment is exactly ``private_env(folder)`` for the test, and the namespaces exist."""
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    for key, value in private_env(folder).items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    (folder / "warehouse").mkdir()
    ensure_namespaces(open_catalog(settings, "admin"), settings)
    return settings


# ---- a private stack-profile lakehouse ----------------------------------------------------------

REST_HEAP_MB = 256  # a test's catalog holds a few tables; the JVM starts in ~2 s with this heap
REST_START_SECONDS = 90.0


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_rest_catalog(settings: Settings, folder: Path) -> subprocess.Popen:
    """A second instance of the stack's Iceberg REST catalog (same jars, launcher, JDBC SQLite and
    S3FileIO set-up, from infra.services), on ``settings.catalog_uri``, its SQLite file in ``folder``."""
    from infra.services import IcebergRest, iceberg_rest_launch

    rest = IcebergRest(settings)  # state_dir is the stack's: its built jars and launcher; the rest is private
    if not rest.is_built():
        pytest.skip("the Iceberg REST catalog is not built (run `lakehouse stack up` once)")
    command, env = iceberg_rest_launch(settings, folder, rest.lib, rest.launcher_dir,
                                       max_heap_mb=REST_HEAP_MB)
    log = folder / "iceberg-rest.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    deadline = time.monotonic() + REST_START_SECONDS
    problem = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-10:]
            raise RuntimeError(f"private Iceberg REST catalog exited with {process.returncode}: " + " | ".join(tail))
        problem = rest.check_health()
        if problem is None:
            return process
        time.sleep(0.2)
    _stop(process)
    raise RuntimeError(f"private Iceberg REST catalog on {settings.catalog_uri} not healthy after "
                       f"{REST_START_SECONDS:.0f}s: {problem}; log: {log}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the catalog this fixture started (only that process, by its pid)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


_CATALOGS: dict[str, tuple[subprocess.Popen, Path]] = {}  # catalog URI -> its process and folder


def stop_private_catalog(settings: Settings) -> None:
    """Stop a ``private_stack_lakehouse``'s REST catalog, as a fault test does to the stack's."""
    process, _ = _CATALOGS[settings.catalog_uri]
    _stop(process)


def start_private_catalog(settings: Settings) -> None:
    """Start it again on the same port and SQLite file (a no-op while it runs)."""
    process, folder = _CATALOGS[settings.catalog_uri]
    if process.poll() is not None:
        _CATALOGS[settings.catalog_uri] = (_start_rest_catalog(settings, folder), folder)


def _delete_buckets(settings: Settings) -> None:
    from tasks.catalog import s3_client
    from tasks.settings import NAMESPACES

    client = s3_client(settings, "admin")
    for layer in NAMESPACES:
        bucket = settings.bucket(layer)
        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                for i in range(0, len(keys), 1000):
                    client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
            client.delete_bucket(Bucket=bucket)
        except client.exceptions.NoSuchBucket:
            pass


def _delete_topic(settings: Settings) -> None:
    from tasks.kafka import admin_client

    admin = admin_client(settings)  # held until the futures resolve: a destroyed handle fails them
    for future in admin.delete_topics([settings.kafka_topic], operation_timeout=30).values():
        try:
            future.result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - only a topic that was never created is fine
            if "UNKNOWN_TOPIC" not in str(exc):
                raise


@contextlib.contextmanager
def private_stack_lakehouse(stack_settings: Settings, folder: Path) -> Iterator[Settings]:
    """A lakehouse of the stack profile of its own: its own Iceberg REST catalog process (free
    loopback port, SQLite file in ``folder``), its own three buckets on the stack's SeaweedFS
    (``bucket_prefix``), a fresh topic of 3 partitions and consumer group on the stack's Kafka, the
    stack's Ray head and Prefect server. Its catalog_tag (catalog URI) names its Daft host, its
    table locks and its commit events, so it never meets the stack's own lakehouse. Everything it
    created is removed on exit."""
    from tasks.catalog import ensure_buckets
    from tasks.kafka import ensure_topic

    unique = uuid.uuid4().hex[:10]
    settings = stack_settings.model_copy(update={
        "catalog_uri": f"http://127.0.0.1:{_free_loopback_port()}",
        "bucket_prefix": f"it-{unique}",
        "kafka_topic": f"it-real-{unique}",
        "kafka_consumer_group": f"it-real-{unique}",
        "ray_address": "auto",
        # its own warm Daft host (named by catalog_tag): let it go soon after the test
        "daft_host_idle_seconds": 15.0,
    }).without_role_credentials()  # its buckets are its own: the per-role identities don't cover them
    folder.mkdir(parents=True, exist_ok=True)
    process = None
    try:
        ensure_buckets(settings)
        process = _start_rest_catalog(settings, folder / "iceberg-rest")
        _CATALOGS[settings.catalog_uri] = (process, folder / "iceberg-rest")
        ensure_namespaces(open_catalog(settings, "admin"), settings)
        ensure_topic(settings, settings.kafka_topic, partitions=3)
        yield settings
    finally:
        try:
            if process is not None:
                _stop(_CATALOGS.pop(settings.catalog_uri, (process, None))[0])
            _delete_buckets(settings)
        finally:
            _delete_topic(settings)


def _with_env(patch: pytest.MonkeyPatch, settings: Settings) -> None:
    """LAKEHOUSE_* of the private lakehouse in this process, as the ``private`` fixture does."""
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        patch.delenv(key)
    for key, value in settings.as_env().items():
        patch.setenv(key, value)


@pytest.fixture
def private_stack(stack_settings, tmp_path, monkeypatch) -> Iterator[Settings]:
    """Settings of a private stack-profile lakehouse for one test (``private_stack_lakehouse``):
    empty tables, its own REST catalog, buckets and topic."""
    with private_stack_lakehouse(stack_settings, tmp_path / "private-stack") as settings:
        _with_env(monkeypatch, settings)
        yield settings


@pytest.fixture(scope="module")
def private_stack_module(stack_settings, tmp_path_factory) -> Iterator[Settings]:
    """``private_stack`` shared by the tests of one module (a scenario that builds up state)."""
    with private_stack_lakehouse(stack_settings, tmp_path_factory.mktemp("private-stack")) as settings:
        with pytest.MonkeyPatch.context() as patch:
            _with_env(patch, settings)
            yield settings
