"""Least privilege on storage, against a real SeaweedFS: each role's S3 identity may read, write and
delete only where the spec says; SeaweedFS itself refuses the rest (AccessDenied).

The SeaweedFS is a private ``weed mini`` of this module (the stack's binary, the stack's command
line on free ports, its data in a temporary folder), configured with the identities document the
stack writes (infra/storage_roles.seaweedfs_identities). The checks use boto3 with the explicit
pairs against the spec written out below, not against the code that builds the document.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tasks.settings import AUDIT, LAYERS, NAMESPACES, ROLES, Settings, load_settings
from tests.conftest import ROOT

pytestmark = pytest.mark.stack

WEED = ROOT / ".lakehouse" / "bin" / "weed"
START_SECONDS = 90.0

# The spec: (layers it reads, layers it writes, layers it deletes in).
# Every writer also appends to the audit bucket (what the platform records about itself).
ALL = set(NAMESPACES)
SPEC: dict[str, tuple[set[str], set[str], set[str]]] = {
    "ingest": ({"bronze", AUDIT}, {"bronze", AUDIT}, set()),
    "silver": ({"bronze", "silver", AUDIT}, {"silver", AUDIT}, set()),
    "gold": ({"silver", "gold", AUDIT}, {"gold", AUDIT}, set()),
    "serving": (ALL, set(), set()),
    "maintenance": (ALL, ALL, ALL),
}
SEED = "seed/object.txt"  # in every bucket, put there by admin


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_command(settings: Settings, data_dir: Path, identities: Path) -> list[str]:
    """The stack's ``weed mini`` command line (infra/services.SEAWEEDFS_ARGS) with every port,
    gRPC and admin ones included, moved to free ones: the stack may be running beside it."""
    from infra.services import SEAWEEDFS_ARGS

    s3_port = int(settings.s3_endpoint.rsplit(":", 1)[1])
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, admin, admin_grpc = _free_ports(9)
    ports = {"-master.port": master, "-master.port.grpc": master_grpc, "-volume.port": volume,
             "-volume.port.grpc": volume_grpc, "-filer.port": filer, "-filer.port.grpc": filer_grpc,
             "-s3.port.grpc": s3_grpc, "-admin.port": admin, "-admin.port.grpc": admin_grpc}
    args = [a for a in SEAWEEDFS_ARGS("127.0.0.1", s3_port, data_dir, identities) if a.split("=", 1)[0] not in ports]
    return [str(WEED), *args, *(f"{flag}={port}" for flag, port in ports.items())]


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory) -> Settings:
    """Settings of a private SeaweedFS with the admin pair and one pair per role, buckets provisioned
    and ``SEED`` in each; the process is stopped (by its pid) after the module."""
    from infra.storage_roles import seaweedfs_identities
    from tasks.catalog import ensure_buckets

    if not WEED.exists():
        pytest.skip("SeaweedFS is not built (run `lakehouse stack up` once)")
    folder = tmp_path_factory.mktemp("seaweedfs")
    [s3_port] = _free_ports(1)
    pairs = {}
    for role in ROLES:
        pairs[f"s3_{role}_access_key_id"] = f"{role}-{secrets.token_hex(4)}"
        pairs[f"s3_{role}_secret_access_key"] = secrets.token_urlsafe(24)
    settings = load_settings(
        profile="stack", state_dir=str(folder / "state"), s3_endpoint=f"http://127.0.0.1:{s3_port}",
        s3_access_key_id=f"admin-{secrets.token_hex(4)}", s3_secret_access_key=secrets.token_urlsafe(24),
        catalog_type="sql", catalog_uri=f"sqlite:///{folder / 'catalog.db'}", **pairs,
    )
    identities = folder / "s3.json"
    identities.write_text(json.dumps(seaweedfs_identities(settings)))
    identities.chmod(0o600)
    data_dir = folder / "data"
    data_dir.mkdir()
    # weed turns AWS_* credentials into an extra admin identity, and WEED_* override its set-up
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_", "LAKEHOUSE_"))}
    env["GOMEMLIMIT"] = "512MiB"
    log = folder / "weed.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(weed_command(settings, data_dir, identities), cwd=data_dir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"weed mini exited with {process.returncode}: "
                            + " | ".join(log.read_text(errors="replace").splitlines()[-10:]))
            try:
                client("admin", settings).list_buckets()
                break
            except Exception as exc:  # noqa: BLE001 - still starting
                if time.monotonic() > deadline:
                    pytest.fail(f"weed mini not serving S3 after {START_SECONDS:.0f}s: {exc}; log: {log}")
                time.sleep(0.3)
        ensure_buckets(settings)
        for layer in NAMESPACES:
            client("admin", settings).put_object(Bucket=settings.bucket(layer), Key=SEED, Body=b"seed")
        yield settings
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def client(role: str, settings: Settings):
    """boto3 with ``role``'s explicit pair (``admin``: the single pair), straight from the settings fields."""
    if role == "admin":
        key, secret = settings.s3_access_key_id, settings.s3_secret_access_key.get_secret_value()
    else:
        key = getattr(settings, f"s3_{role}_access_key_id")
        secret = getattr(settings, f"s3_{role}_secret_access_key").get_secret_value()
    return boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region,
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def denied(call, **kwargs) -> bool:
    """True when S3 refuses the call with AccessDenied; any other error is raised."""
    try:
        call(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "AccessDenied":
            return True
        raise
    return False


def exists(settings: Settings, bucket: str, key: str) -> bool:
    try:
        client("admin", settings).head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise


def plant(settings: Settings, bucket: str) -> str:
    key = f"victims/{uuid.uuid4().hex}"
    client("admin", settings).put_object(Bucket=bucket, Key=key, Body=b"keep me")
    return key


# ---- the cases the issue names --------------------------------------------------------------------

def test_silver_is_refused_writing_bronze_or_gold(seaweed):
    silver = client("silver", seaweed)
    key = f"probe/{uuid.uuid4().hex}"
    assert denied(silver.put_object, Bucket="lakehouse-bronze", Key=key, Body=b"x")
    assert denied(silver.put_object, Bucket="lakehouse-gold", Key=key, Body=b"x")
    assert not exists(seaweed, "lakehouse-bronze", key) and not exists(seaweed, "lakehouse-gold", key)
    silver.put_object(Bucket="lakehouse-silver", Key=key, Body=b"x")
    assert silver.get_object(Bucket="lakehouse-silver", Key=key)["Body"].read() == b"x"
    assert silver.get_object(Bucket="lakehouse-bronze", Key=SEED)["Body"].read() == b"seed"
    assert denied(silver.get_object, Bucket="lakehouse-gold", Key=SEED)


def test_serving_reads_everything_and_is_refused_any_write(seaweed):
    serving = client("serving", seaweed)
    for layer in NAMESPACES:
        bucket = seaweed.bucket(layer)
        assert serving.get_object(Bucket=bucket, Key=SEED)["Body"].read() == b"seed"
        assert SEED in [o["Key"] for o in serving.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert denied(serving.put_object, Bucket=bucket, Key=f"probe/{uuid.uuid4().hex}", Body=b"x")
        assert denied(serving.create_multipart_upload, Bucket=bucket, Key=f"probe/{uuid.uuid4().hex}")
        assert denied(serving.copy_object, Bucket=bucket, Key=f"probe/{uuid.uuid4().hex}",
                      CopySource={"Bucket": bucket, "Key": SEED})
        victim = plant(seaweed, bucket)
        assert denied(serving.delete_object, Bucket=bucket, Key=victim)
        errors = serving.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": victim}]}).get("Errors", [])
        assert [e["Code"] for e in errors] == ["AccessDenied"]
        assert exists(seaweed, bucket, victim)


def test_ingest_is_refused_writing_silver_and_gold(seaweed):
    ingest = client("ingest", seaweed)
    ingest.put_object(Bucket="lakehouse-bronze", Key=f"probe/{uuid.uuid4().hex}", Body=b"x")
    for bucket in ("lakehouse-silver", "lakehouse-gold"):
        assert denied(ingest.put_object, Bucket=bucket, Key=f"probe/{uuid.uuid4().hex}", Body=b"x")


@pytest.mark.parametrize("layer", NAMESPACES)
def test_maintenance_deletes_in_every_layer(seaweed, layer):
    maintenance, bucket = client("maintenance", seaweed), seaweed.bucket(layer)
    one, two, three = (plant(seaweed, bucket) for _ in range(3))
    maintenance.delete_object(Bucket=bucket, Key=one)
    answer = maintenance.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": two}, {"Key": three}]})
    assert not answer.get("Errors")
    assert not any(exists(seaweed, bucket, key) for key in (one, two, three))
    maintenance.put_object(Bucket=bucket, Key=f"compacted/{uuid.uuid4().hex}", Body=b"x")  # compaction writes


@pytest.mark.parametrize("role", ["ingest", "silver", "gold"])
def test_a_writer_is_refused_deleting_even_in_its_own_layer(seaweed, role):
    writer = client(role, seaweed)
    for layer in sorted(SPEC[role][1]):
        bucket = seaweed.bucket(layer)
        victim = plant(seaweed, bucket)
        assert denied(writer.delete_object, Bucket=bucket, Key=victim)
        errors = writer.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": victim}]}).get("Errors", [])
        assert [e["Code"] for e in errors] == ["AccessDenied"]
        assert exists(seaweed, bucket, victim)
    bucket = seaweed.bucket(role if role != "ingest" else "bronze")
    # an upload in parts is a write: allowed, and so is abandoning it
    upload = writer.create_multipart_upload(Bucket=bucket, Key=f"parts/{uuid.uuid4().hex}")
    writer.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


# ---- the whole matrix ---------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_each_role_reads_writes_and_deletes_exactly_where_the_spec_says(seaweed, role):
    reads, writes, deletes = SPEC[role]
    s3 = client(role, seaweed)
    for layer in NAMESPACES:
        bucket = seaweed.bucket(layer)
        where = f"{role} in {bucket}"
        assert denied(s3.get_object, Bucket=bucket, Key=SEED) == (layer not in reads), f"{where}: get"
        assert denied(s3.list_objects_v2, Bucket=bucket) == (layer not in reads), f"{where}: list"
        key = f"probe/{role}-{uuid.uuid4().hex}"
        assert denied(s3.put_object, Bucket=bucket, Key=key, Body=b"x") == (layer not in writes), f"{where}: put"
        victim = plant(seaweed, bucket)
        assert denied(s3.delete_object, Bucket=bucket, Key=victim) == (layer not in deletes), f"{where}: delete"
        assert exists(seaweed, bucket, victim) == (layer not in deletes), where


def test_a_role_cannot_use_the_buckets_of_another_lakehouse(seaweed):
    """The grants name the lakehouse's own buckets: a bucket beside them (say a private lake's) is
    the admin's only."""
    other = f"other-{uuid.uuid4().hex[:8]}-bronze"
    client("admin", seaweed).create_bucket(Bucket=other)
    for role in ROLES:
        assert denied(client(role, seaweed).put_object, Bucket=other, Key="x", Body=b"x"), role
        assert denied(client(role, seaweed).list_objects_v2, Bucket=other), role


# ---- the lakehouse's own clients, opened per role -------------------------------------------------------

def test_the_clients_a_flow_opens_sign_as_its_role(seaweed):
    """tasks.catalog builds every client from the role it is given: an ingest catalog appends to a
    bronze table, a silver one reads it (pyiceberg and Daft) and is refused appending to it, and the
    maintenance client deletes its files."""
    import daft
    import pyarrow as pa
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField

    from tasks.catalog import io_config, open_catalog
    from tasks.maintenance.storage import delete_files, list_files

    schema = Schema(NestedField(1, "n", LongType(), required=False))
    rows = pa.table({"n": pa.array([1, 2, 3], pa.int64())})
    name = f"roles_{uuid.uuid4().hex[:8]}"
    location = f"{seaweed.layer_location('bronze')}/{name}"
    ingest = open_catalog(seaweed, "ingest")
    ingest.create_namespace_if_not_exists("bronze")
    ingest.create_table(f"bronze.{name}", schema=schema, location=location).append(rows)

    as_silver = open_catalog(seaweed, "silver").load_table(f"bronze.{name}")
    assert as_silver.scan().to_arrow().num_rows == 3
    assert daft.read_iceberg(as_silver, io_config=io_config(seaweed, "silver")).count_rows() == 3
    with pytest.raises(OSError, match="(?i)access.?denied"):
        as_silver.append(rows)
    assert open_catalog(seaweed, "serving").load_table(f"bronze.{name}").scan().to_arrow().num_rows == 3

    files = [f.uri for f in list_files(location, seaweed)]  # the maintenance role lists and deletes
    assert files and len(delete_files(files, seaweed)) == len(files)
    assert list_files(location, seaweed) == []


# ---- the stack's own SeaweedFS, with the pairs `stack up` generated --------------------------------

def test_the_stacks_generated_role_pairs_are_enforced(stack_settings):
    """The running stack, not a private server: its identities come from the generated secrets.
    Probes only write a `_role_probe/` object, never a table's files, and remove it again."""
    assert stack_settings.s3_silver_access_key_id, "stack up generated per-role pairs"

    def stack_client(role):
        key_id, secret = stack_settings.s3_credentials(role)
        return boto3.client("s3", endpoint_url=stack_settings.s3_endpoint, region_name=stack_settings.s3_region,
                            aws_access_key_id=key_id, aws_secret_access_key=secret,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    key = f"_role_probe/{uuid.uuid4().hex}"
    silver, serving, maintenance = stack_client("silver"), stack_client("serving"), stack_client("maintenance")
    assert denied(silver.put_object, Bucket=stack_settings.bucket("bronze"), Key=key, Body=b"x")
    assert denied(silver.put_object, Bucket=stack_settings.bucket("gold"), Key=key, Body=b"x")
    for layer in LAYERS:
        assert denied(serving.put_object, Bucket=stack_settings.bucket(layer), Key=key, Body=b"x")
    silver.put_object(Bucket=stack_settings.bucket("silver"), Key=key, Body=b"x")
    try:
        assert denied(silver.delete_object, Bucket=stack_settings.bucket("silver"), Key=key)
        assert serving.get_object(Bucket=stack_settings.bucket("silver"), Key=key)["Body"].read() == b"x"
    finally:
        maintenance.delete_object(Bucket=stack_settings.bucket("silver"), Key=key)
    assert not exists(stack_settings, stack_settings.bucket("silver"), key)
