"""A lakehouse of its own for a test: a private SQLite catalog and file warehouse, with the
stack's Prefect server and Ray head. Bronze is written directly, as the ingest would."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from tasks.catalog import open_catalog
from tasks.commits import append_with_offsets, latest_offsets
from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table
from tasks.transforms.bronze import RecordColumns, records_to_arrow
from tests.conftest import ROOT

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def private_env(tmp_path) -> dict[str, str]:
    return {
        "LAKEHOUSE_PROFILE": "embedded",
        "LAKEHOUSE_STATE_DIR": str(ROOT / ".lakehouse"),  # the stack's Ray token lives there
        "LAKEHOUSE_CATALOG_URI": f"sqlite:///{tmp_path / 'catalog.db'}",
        "LAKEHOUSE_WAREHOUSE": (tmp_path / "warehouse").as_uri(),
        "LAKEHOUSE_RAY_ADDRESS": "auto",
        # each private catalog gets its own warm Daft host: let it go soon after the test
        "LAKEHOUSE_DAFT_HOST_IDLE_SECONDS": "15",
    }


def s3_lake(stack_settings, tmp_path, name: str, topic: str | None = None):
    """Settings of a lakehouse of its own on the stack's services: a SQLite catalog in ``tmp_path``,
    the buckets ``lakehouse-<name>-*`` on the stack's S3, and ``topic`` (created, 3 partitions)."""
    from tasks.catalog import ensure_buckets, ensure_namespaces
    from tasks.kafka import ensure_topic

    settings = stack_settings.model_copy(update={
        "catalog_type": "sql", "catalog_uri": f"sqlite:///{tmp_path / f'{name}-catalog.db'}",
        "bucket_prefix": f"lakehouse-{name}", "kafka_topic": topic or stack_settings.kafka_topic,
    }).without_role_credentials()  # its buckets are its own: the per-role identities don't cover them
    ensure_buckets(settings)
    ensure_namespaces(open_catalog(settings, "admin"), settings)
    if topic is not None:
        ensure_topic(settings, topic, partitions=3)
    return settings


def lake_environment(settings) -> dict[str, str]:
    """The environment of a `lakehouse` subprocess working on an ``s3_lake``."""
    from tests.conftest import stack_environment

    from tasks.settings import ROLE_CREDENTIAL_FIELDS, env_key

    return {**stack_environment(), "LAKEHOUSE_CATALOG_TYPE": settings.catalog_type,
            "LAKEHOUSE_CATALOG_URI": settings.catalog_uri, "LAKEHOUSE_BUCKET_PREFIX": settings.bucket_prefix,
            "LAKEHOUSE_KAFKA_TOPIC": settings.kafka_topic,
            # every role on the single pair, over the stack's generated ones (see s3_lake)
            **{env_key(f): "" for f in ROLE_CREDENTIAL_FIELDS}}


def make_event(n: int, *, occurred: datetime = NOW - timedelta(minutes=5), user: str | None = "u-1",
               plan: str = "free", version: int = 1, **extra) -> bytes:
    body = {
        "event_id": str(uuid.UUID(int=n)), "event_type": "conversion", "schema_version": version,
        "occurred_at": occurred.isoformat().replace("+00:00", "Z"), "user_id": user,
        "user_plan": plan if user else None, "user_country": "DE" if user else None,
        "direction": "to_roman", "input": "4", "output": "IV", "success": True, "error_code": None,
        "latency_ms": 1.5, "endpoint": "/v1/to-roman", "http_status": 200, "client": "cli",
    }
    if version == 2:
        body.update({"region": "eu-west-1", "cache_hit": True})
    body.update(extra)
    return json.dumps(body).encode()


def land_in_bronze(settings, values: list[bytes | None], at: datetime = NOW) -> None:
    """Append records to bronze as the ingest would, continuing partition 0's offsets."""
    table = ensure_table(open_catalog(settings, "ingest"), settings, BRONZE_CONVERSION_EVENTS_RAW)
    expected = latest_offsets(table)
    start = expected.get("t", {}).get(0, 0)
    columns = RecordColumns(
        offsets=list(range(start, start + len(values))),
        timestamps_ms=[int(at.timestamp() * 1000)] * len(values),
        keys=[None] * len(values), values=list(values), headers=[None] * len(values),
    )
    run_id = "run-" + uuid.uuid4().hex
    rows = records_to_arrow("t", 0, columns, at, run_id)
    append_with_offsets(table, rows, expected, {"t": {0: start + len(values)}}, run_id, {})
