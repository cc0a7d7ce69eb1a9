"""The one place that turns Settings into an Iceberg catalog, a Daft IOConfig and a boto3 client.

Only the endpoint and credentials differ between SeaweedFS, MinIO and AWS S3, so every client is
built from the same four settings here and nowhere else.

Every client signs as one S3 role (``tasks.settings.ROLES``), which the caller names: ingest writes
bronze, silver reads bronze and writes silver, gold reads silver and writes gold, serving only
reads, maintenance also deletes. ``admin`` (the single pair) is for bucket provisioning and the
stack's own checks only; no flow passes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError

from tasks.settings import ADMIN_ROLE, NAMESPACES, S3Role, Settings

if TYPE_CHECKING:  # heavy imports only where used
    import daft.io


def s3_properties(settings: Settings, role: S3Role) -> dict[str, str]:
    """pyiceberg FileIO properties for S3, signed as ``role``; empty when the warehouse is on local disk."""
    key_id, secret = settings.s3_credentials(role)  # raises on an unknown role, whatever the warehouse
    if not settings.uses_s3:
        return {}
    props = {
        "s3.region": settings.s3_region,
        "s3.access-key-id": key_id,
        "s3.secret-access-key": secret,
        "s3.force-virtual-addressing": str(not settings.s3_path_style).lower(),
    }
    if settings.s3_endpoint:
        props["s3.endpoint"] = settings.s3_endpoint
    return props


def catalog_auth_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg's REST auth: a bearer token (the local catalog, Lakekeeper, Glue's REST endpoint
    behind a proxy) or OAuth2 client credentials (Polaris), exchanged at the token endpoint."""
    props: dict[str, str] = {}
    if settings.catalog_token is not None and settings.catalog_token.get_secret_value():
        props["token"] = settings.catalog_token.get_secret_value()
    if settings.catalog_credential is not None and settings.catalog_credential.get_secret_value():
        props["credential"] = settings.catalog_credential.get_secret_value()
        if settings.catalog_oauth2_server_uri:
            props["oauth2-server-uri"] = settings.catalog_oauth2_server_uri
        if settings.catalog_scope:
            props["scope"] = settings.catalog_scope
    return props


def catalog_properties(settings: Settings) -> dict[str, str]:
    props: dict[str, Any] = {"type": settings.catalog_type, "uri": settings.catalog_uri}
    if settings.catalog_type == "sql":
        props["warehouse"] = settings.warehouse if not settings.uses_s3 else f"s3://{settings.bucket('bronze')}"
        props["init_catalog_tables"] = "true"
    else:
        props.update(catalog_auth_properties(settings))
    return props  # open_catalog adds the S3 properties of the caller's role


def open_catalog(settings: Settings, role: S3Role) -> Catalog:
    """The configured Iceberg catalog: SQLite SQL catalog (embedded) or REST catalog (stack). Its
    FileIO (manifests, data files; metadata too with a SQL catalog) signs S3 requests as ``role``;
    a REST catalog server writes table metadata with its own credentials."""
    props = {**catalog_properties(settings), **s3_properties(settings, role)}
    if settings.catalog_type == "sql" and not settings.uses_s3:
        # SQLite and the file warehouse need their folders before the first connection.
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        local_path = settings.warehouse.removeprefix("file://")
        from pathlib import Path

        Path(local_path).mkdir(parents=True, exist_ok=True)
    return load_catalog(settings.catalog_name, **props)


def ensure_namespaces(catalog: Catalog, settings: Settings) -> list[str]:
    """Create bronze, silver, gold and audit, each located in its own bucket; idempotent."""
    created = []
    for layer in NAMESPACES:
        try:
            catalog.create_namespace(layer, {"location": settings.layer_location(layer)})
            created.append(layer)
        except NamespaceAlreadyExistsError:
            pass
    return created


def io_config(settings: Settings, role: S3Role) -> "daft.io.IOConfig":
    """Daft's IOConfig for the same store the catalog writes to, signed as ``role``."""
    from daft.io import IOConfig, S3Config

    key_id, secret = settings.s3_credentials(role)
    if not settings.uses_s3:
        return IOConfig()
    return IOConfig(
        s3=S3Config(
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            key_id=key_id or None,
            access_key=secret or None,
            force_virtual_addressing=not settings.s3_path_style,
        )
    )


def s3_client(settings: Settings, role: S3Role):
    """A boto3 S3 client signed as ``role``: ``admin`` for bucket administration and the stack's
    checks, ``maintenance`` for listing and deleting files."""
    import boto3
    from botocore.config import Config

    key_id, secret = settings.s3_credentials(role)
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        config=Config(
            s3={"addressing_style": "path" if settings.s3_path_style else "virtual"},
            retries={"max_attempts": 3},
            connect_timeout=3,
            read_timeout=30,
        ),
    )


def ensure_buckets(settings: Settings) -> list[str]:
    """Create the layer buckets and the audit bucket if missing (as admin); returns the ones it created."""
    client = s3_client(settings, ADMIN_ROLE)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    created = []
    for layer in NAMESPACES:
        name = settings.bucket(layer)
        if name not in existing:
            client.create_bucket(Bucket=name)
            created.append(name)
    return created
