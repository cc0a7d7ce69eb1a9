"""The secrets a local stack makes for itself, and how the settings find them.

``lakehouse stack up`` generates them once into ``<state_dir>/secrets`` (folder 0700, files
0600): the Prefect server's basic-auth string, the REST catalog's bearer token, the S3 admin
pair and one S3 key pair per storage role, Ray's token and SeaweedFS's signing keys. ``load_settings`` reads them as
defaults below the settings file and the environment, so every ``lakehouse`` command, the
Prefect worker and the flow runs it starts use the same values without any being written into a
config file, a command line or a log. Users of managed services set these values themselves;
nothing is generated for them unless they run ``stack up``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

SECRETS_FILE = "settings.json"
RAY_TOKEN_FILE = "ray-auth-token"
SEAWEEDFS_KEYS_FILE = "seaweedfs-keys.json"


def secrets_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "secrets"


def private_folder(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: other users may not list or enter it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never briefly readable by others."""
    private_folder(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def role_key_fields(fields: list[str]) -> list[tuple[str, str, str]]:
    """(role, key id field, secret field) of every per-role S3 pair the settings declare."""
    out = []
    for name in fields:
        if name.startswith("s3_") and name.endswith("_access_key_id") and name != "s3_access_key_id":
            role = name.removeprefix("s3_").removesuffix("_access_key_id")
            secret = f"s3_{role}_secret_access_key"
            if secret in fields:
                out.append((role, name, secret))
    return out


def generate(state_dir: Path, fields: list[str]) -> list[str]:
    """Create whatever secret is missing; never replace one (running services hold them).

    ``fields``: the settings' field names (per-role S3 pairs are found among them). Returns the
    names of what it created."""
    folder = private_folder(secrets_dir(state_dir))
    path = folder / SECRETS_FILE
    values = read_values(state_dir)
    created = []
    wanted = {
        "prefect_api_auth_string": lambda: f"lakehouse:{secrets.token_urlsafe(24)}",
        "catalog_token": lambda: secrets.token_urlsafe(32),
        # the admin pair: buckets, and the REST catalog server's metadata writes
        "s3_access_key_id": lambda: f"lakehouse-admin-{secrets.token_hex(4)}",
        "s3_secret_access_key": lambda: secrets.token_urlsafe(30),
    }
    for role, key_field, secret_field in role_key_fields(fields):
        wanted[key_field] = lambda role=role: f"lakehouse-{role}-{secrets.token_hex(4)}"
        wanted[secret_field] = lambda: secrets.token_urlsafe(30)
    for name, make in wanted.items():
        if not values.get(name):
            values[name] = make()
            created.append(name)
    if created or not path.exists():
        write_private(path, json.dumps(values, indent=2, sort_keys=True))
    ray_token = folder / RAY_TOKEN_FILE
    if not ray_token.exists():
        write_private(ray_token, secrets.token_hex(32))
        created.append("ray token")
    keys = folder / SEAWEEDFS_KEYS_FILE
    if not keys.exists():
        write_private(keys, json.dumps({k: secrets.token_urlsafe(32) for k in
                                        ("volume_write", "volume_read", "filer_write", "filer_read")}))
        created.append("SeaweedFS signing keys")
    return created


def read_values(state_dir: Path) -> dict[str, str]:
    """The generated settings values, or {} before the first ``stack up``."""
    path = secrets_dir(state_dir) / SECRETS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); delete it and run `lakehouse stack up` again") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def seaweedfs_keys(state_dir: Path) -> dict[str, str]:
    path = secrets_dir(state_dir) / SEAWEEDFS_KEYS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def ray_token_path(state_dir: Path) -> Path:
    return secrets_dir(state_dir) / RAY_TOKEN_FILE
