"""Least privilege on storage: what each S3 role may do in which layer bucket, and the SeaweedFS
identities document (``weed -s3.config``) that enforces it on the local stack.

ingest writes bronze; silver reads bronze and writes silver; gold reads silver and writes gold;
serving (``lakehouse sql``, notebooks, reports, verify) reads every layer and writes nothing;
maintenance reads, writes and deletes in every layer. The writing roles also append to the audit
bucket (data-quality results, lineage events), and serving reads it. Each role also reads the bucket it writes:
an Iceberg commit reads the table's manifests, silver deduplicates against its own history, gold
merges into its own tables.

SeaweedFS's legacy identity actions (``Read``, ``Write``, ``List``, ``Tagging``, ``Admin``, each
optionally ``:bucket`` scoped) cannot keep deletes apart: its DeleteObject and DeleteObjects routes
are gated on ``Write``, so every writer could delete. The roles are therefore IAM policy documents
attached to their identities (``policies`` + ``policyNames``, which SeaweedFS evaluates per S3
action: s3:PutObject and s3:DeleteObject are distinct), and only maintenance is granted
s3:DeleteObject. s3:PutObject also covers the multipart upload calls (create, part, complete,
abort). What no S3 policy can stop: a PutObject over an existing key replaces it, so a writer can
overwrite (never delete) files of its own layer; Iceberg never reuses a file name.

The admin identity (the single pair, ``s3_access_key_id``) keeps the legacy ``Admin`` grant: it
creates the buckets and is what the Iceberg REST catalog server writes table metadata with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tasks.settings import AUDIT, NAMESPACES, ROLES, Settings


@dataclass(frozen=True)
class Grant:
    """The layers a role reads (get, list), writes (put) and deletes in."""

    read: tuple[str, ...]
    write: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()


# Every flow appends what it records about itself (data-quality results, lineage events) to the
# audit namespace: each writing role writes there too (appends only, no deletes), and reads it,
# because an Iceberg commit reads the table's manifests.
GRANTS: dict[str, Grant] = {
    "ingest": Grant(read=("bronze", AUDIT), write=("bronze", AUDIT)),
    "silver": Grant(read=("bronze", "silver", AUDIT), write=("silver", AUDIT)),
    "gold": Grant(read=("silver", "gold", AUDIT), write=("gold", AUDIT)),
    "serving": Grant(read=NAMESPACES),
    "maintenance": Grant(read=NAMESPACES, write=NAMESPACES, delete=NAMESPACES),
}
assert tuple(GRANTS) == ROLES

READ_BUCKET_ACTIONS = ("s3:ListBucket", "s3:GetBucketLocation")  # on arn:aws:s3:::<bucket>
READ_OBJECT_ACTIONS = ("s3:GetObject",)  # on arn:aws:s3:::<bucket>/*
WRITE_OBJECT_ACTIONS = ("s3:PutObject",)  # multipart uploads ride on it
DELETE_OBJECT_ACTIONS = ("s3:DeleteObject",)
ADMIN_ACTIONS = ["Admin", "Read", "Write", "List", "Tagging"]
ADMIN_IDENTITY = "lakehouse"  # the name the single identity always had


def identity_name(role: str) -> str:
    return f"lakehouse-{role}"


def role_policy(settings: Settings, role: str) -> dict:
    """The IAM policy document of one role: its actions on its layers' buckets, nothing else."""
    grant = GRANTS[role]

    def buckets(layers: tuple[str, ...]) -> list[str]:
        return [f"arn:aws:s3:::{settings.bucket(layer)}" for layer in layers]

    def objects(layers: tuple[str, ...]) -> list[str]:
        return [f"{arn}/*" for arn in buckets(layers)]

    statements = [
        {"Sid": "List", "Effect": "Allow", "Action": list(READ_BUCKET_ACTIONS), "Resource": buckets(grant.read)},
        {"Sid": "Read", "Effect": "Allow", "Action": list(READ_OBJECT_ACTIONS), "Resource": objects(grant.read)},
    ]
    if grant.write:
        statements.append({"Sid": "Write", "Effect": "Allow", "Action": list(WRITE_OBJECT_ACTIONS),
                           "Resource": objects(grant.write)})
    if grant.delete:
        statements.append({"Sid": "Delete", "Effect": "Allow", "Action": list(DELETE_OBJECT_ACTIONS),
                           "Resource": objects(grant.delete)})
    return {"Version": "2012-10-17", "Statement": statements}


def seaweedfs_identities(settings: Settings) -> dict:
    """The ``-s3.config`` document: the admin identity (the single pair) and one identity per role
    that has its own pair, each with its role's policy attached. A role without its own pair signs
    with the single pair (``Settings.s3_credentials``), so it has no identity here.

    Raises ValueError when two identities would share an access key id (SeaweedFS refuses the
    whole file then)."""
    admin_key, admin_secret = settings.s3_credentials("admin")
    identities = [{
        "name": ADMIN_IDENTITY,
        "credentials": [{"accessKey": admin_key, "secretKey": admin_secret}],
        "actions": list(ADMIN_ACTIONS),
    }]
    policies = []
    owners = {admin_key: "s3_access_key_id"}
    for role in ROLES:
        if getattr(settings, f"s3_{role}_access_key_id") is None:
            continue
        key, secret = settings.s3_credentials(role)
        field = f"s3_{role}_access_key_id"
        if key in owners:
            raise ValueError(f"{field} is the same access key id as {owners[key]}: every role needs its own")
        owners[key] = field
        identities.append({
            "name": identity_name(role),
            "credentials": [{"accessKey": key, "secretKey": secret}],
            "policyNames": [identity_name(role)],
        })
        # "content" is the policy as a JSON string (iam_pb.Policy), what every SeaweedFS version reads
        policies.append({"name": identity_name(role), "content": json.dumps(role_policy(settings, role))})
    document: dict = {"identities": identities}
    if policies:
        document["policies"] = policies
    return document
