"""The one place that turns Settings into an Iceberg catalog, a Daft IOConfig and a boto3 client.

Only the endpoint and credentials differ between SeaweedFS, MinIO and AWS S3, so every client is
built from the same four settings here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError

from tasks.settings import LAYERS, Settings

if TYPE_CHECKING:  # heavy imports only where used
    import daft.io


def s3_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg FileIO properties for S3; empty when the warehouse is on local disk."""
    if not settings.uses_s3:
        return {}
    props = {
        "s3.region": settings.s3_region,
        "s3.access-key-id": settings.s3_access_key_id or "",
        "s3.secret-access-key": settings.s3_secret_access_key.get_secret_value()
        if settings.s3_secret_access_key
        else "",
        "s3.force-virtual-addressing": str(not settings.s3_path_style).lower(),
    }
    if settings.s3_endpoint:
        props["s3.endpoint"] = settings.s3_endpoint
    return props


def catalog_properties(settings: Settings) -> dict[str, str]:
    props: dict[str, Any] = {"type": settings.catalog_type, "uri": settings.catalog_uri}
    if settings.catalog_type == "sql":
        props["warehouse"] = settings.warehouse if not settings.uses_s3 else f"s3://{settings.bucket('bronze')}"
        props["init_catalog_tables"] = "true"
    return {**props, **s3_properties(settings)}


def open_catalog(settings: Settings) -> Catalog:
    """The configured Iceberg catalog: SQLite SQL catalog (embedded) or REST catalog (stack)."""
    if settings.catalog_type == "sql" and not settings.uses_s3:
        # SQLite and the file warehouse need their folders before the first connection.
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        local_path = settings.warehouse.removeprefix("file://")
        from pathlib import Path

        Path(local_path).mkdir(parents=True, exist_ok=True)
    return load_catalog(settings.catalog_name, **catalog_properties(settings))


def ensure_namespaces(catalog: Catalog, settings: Settings) -> list[str]:
    """Create bronze, silver and gold, each located in its own layer bucket; idempotent."""
    created = []
    for layer in LAYERS:
        try:
            catalog.create_namespace(layer, {"location": settings.layer_location(layer)})
            created.append(layer)
        except NamespaceAlreadyExistsError:
            pass
    return created


def io_config(settings: Settings) -> "daft.io.IOConfig":
    """Daft's IOConfig for the same store the catalog writes to."""
    from daft.io import IOConfig, S3Config

    if not settings.uses_s3:
        return IOConfig()
    return IOConfig(
        s3=S3Config(
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            key_id=settings.s3_access_key_id,
            access_key=settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None,
            force_virtual_addressing=not settings.s3_path_style,
        )
    )


def s3_client(settings: Settings):
    """A boto3 S3 client for bucket administration and checks."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value()
        if settings.s3_secret_access_key
        else None,
        config=Config(
            s3={"addressing_style": "path" if settings.s3_path_style else "virtual"},
            retries={"max_attempts": 3},
            connect_timeout=3,
            read_timeout=30,
        ),
    )


def ensure_buckets(settings: Settings) -> list[str]:
    """Create the three layer buckets if missing; returns the ones it created."""
    client = s3_client(settings)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    created = []
    for layer in LAYERS:
        name = settings.bucket(layer)
        if name not in existing:
            client.create_bucket(Bucket=name)
            created.append(name)
    return created
