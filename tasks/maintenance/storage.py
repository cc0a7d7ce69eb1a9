"""Listing and deleting the files under a table's location, on a file:// warehouse or on S3.

pyiceberg's FileIO reads and writes single files but cannot list a prefix, so orphan removal and
the deletions of expiry go through here: os/pathlib for file://, boto3 (tasks.catalog.s3_client)
for s3://. Every path is compared in the normalised form of :func:`normalize`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

from tasks.settings import Settings


@dataclass(frozen=True)
class StoredFile:
    uri: str  # normalised, see normalize()
    size: int
    mtime_ms: int


def normalize(uri: str) -> str:
    """One spelling per file: ``file:///a/b`` and ``file:/a/b`` and ``/a/b`` become ``/a/b``;
    ``s3a://`` and ``s3n://`` become ``s3://``."""
    if uri.startswith("file:"):
        path = uri[len("file:"):]
        if path.startswith("//"):
            path = path[2:]  # file:///abs -> /abs (an empty authority)
        return "/" + path.lstrip("/")
    for scheme in ("s3a://", "s3n://"):
        if uri.startswith(scheme):
            return "s3://" + uri[len(scheme):]
    return uri


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(normalize(uri))
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// location: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def list_files(location: str, settings: Settings) -> list[StoredFile]:
    """Every file under ``location`` (a folder: ``<location>/...``, never a sibling sharing the prefix)."""
    root = normalize(location).rstrip("/")
    if root.startswith("s3://"):
        from tasks.catalog import s3_client

        bucket, prefix = _split_s3(root)
        prefix = f"{prefix}/" if prefix else ""
        out = []
        paginator = s3_client(settings, "maintenance").get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # a folder marker
                out.append(StoredFile(f"s3://{bucket}/{obj['Key']}", int(obj["Size"]),
                                      int(obj["LastModified"].timestamp() * 1000)))
        return out
    if "://" in root:
        raise ValueError(f"unsupported location {location!r}: expected file:// or s3://")
    if not Path(root).is_dir():
        return []
    out = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # deleted while listing
                continue
            out.append(StoredFile(path, st.st_size, int(st.st_mtime * 1000)))
    return out


def delete_files(uris: Iterable[str], settings: Settings) -> list[str]:
    """Delete the files; a file already gone counts as deleted. Returns the normalised uris deleted."""
    local, remote = [], {}
    for uri in dict.fromkeys(normalize(u) for u in uris):
        if uri.startswith("s3://"):
            bucket, key = _split_s3(uri)
            remote.setdefault(bucket, []).append(key)
        elif "://" in uri:
            raise ValueError(f"unsupported file {uri!r}: expected file:// or s3://")
        else:
            local.append(uri)
    deleted = []
    for path in local:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        deleted.append(path)
    if remote:
        from tasks.catalog import s3_client

        client = s3_client(settings, "maintenance")
        for bucket, keys in remote.items():
            for start in range(0, len(keys), 1000):
                chunk = keys[start:start + 1000]
                answer = client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
                )
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise OSError(f"s3://{bucket}/{first.get('Key')}: delete failed: {first.get('Code')} "
                                  f"{first.get('Message')} ({len(errors)} errors)")
                deleted.extend(f"s3://{bucket}/{k}" for k in chunk)
    return deleted
