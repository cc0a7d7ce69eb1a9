"""Private lakehouses for the benchmarks, so that none writes the lakehouse its settings point at.

A benchmark borrows the services of the lakehouse it is pointed at (Kafka, S3, the Ray head, the
Prefect server) but never its tables, topics, buckets or Prefect objects:

* ``file_lake(lake)``: a SQLite catalog and a file warehouse under ``lake`` (silver, gold);
* ``PrivateLake(base, label)``: the base settings' S3, Kafka, Ray head and Prefect server with a
  SQLite catalog in a work folder, buckets of its own (``bucket_prefix`` ``bench-<label>-<run>``,
  created by ``create`` and emptied and deleted by ``drop``) and a Kafka consumer group of its own
  (ingest, compaction);
* ``private_topic`` / ``drop_topic``: a uniquely named ``bench-...`` topic, and its deletion (which
  refuses any topic not named so);
* ``isolate_prefect(settings)``: in this process, the ``lakehouse.table.committed`` events of the
  flows' commits carry a private resource id, so no deployment trigger of the lakehouse (silver
  listens to bronze commits, gold to silver's) starts a run, and the flows' artifacts get private
  keys instead of the lakehouse's own (``ingest-bronze``, ``gold-latest-day`` ...);
* ``python benchmarks/private_lake.py cli ARGS...``: the ``lakehouse`` command with
  ``isolate_prefect`` applied, for benchmarks that time the CLI in a subprocess.

Never writes the tables of the lakehouse it is pointed at: it creates only SQLite catalogs of its own and
``bench-*`` topics, buckets and consumer groups, and deletes nothing else.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from tasks.settings import Settings

STACK_CONFIG = ROOT / "infra" / "stack.toml"
PREFIX = "bench-"  # every topic, bucket and consumer group a benchmark creates is named so


def clear_lakehouse_env() -> None:
    """Drop LAKEHOUSE_* from this process: they would win over a private lakehouse's overrides."""
    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        del os.environ[key]


def child_env(settings: "Settings", **extra: str) -> dict[str, str]:
    """This process's environment with exactly ``settings`` as LAKEHOUSE_* (secrets included: for
    child processes only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    return {**env, **settings.as_env(), **extra}


def unique(label: str) -> str:
    return f"{PREFIX}{label}-{uuid.uuid4().hex[:8]}"


# ---- a private file lakehouse (silver, gold) -----------------------------------------------------


def file_lake(lake: Path, ray_address: str = "auto") -> "Settings":
    """A private lakehouse: SQLite catalog and file warehouse under ``lake``; Ray head of the stack."""
    clear_lakehouse_env()
    from tasks.settings import load_settings

    (lake / "warehouse").mkdir(parents=True, exist_ok=True)
    return load_settings(
        profile="embedded",
        state_dir=str(ROOT / ".lakehouse"),  # the stack's Ray auth token lives there
        catalog_uri=f"sqlite:///{lake / 'catalog.db'}",
        warehouse=(lake / "warehouse").as_uri(),
        ray_address=ray_address,
        daft_host_idle_seconds=120,  # each private lake has its own warm Daft host: not for long
    )


# ---- a private lakehouse on the base settings' S3 (ingest, compaction) ----------------------------


class PrivateLake:
    """The base settings' services with a private catalog, buckets and consumer group.

    ``settings`` keep the base's S3 endpoint and credentials, Kafka, Ray head, Prefect server and
    state folder (the Ray auth token lives there); the catalog is SQLite in ``workdir`` and the
    layers' buckets are ``bench-<label>-<run>-<layer>`` (or folders under ``workdir`` when the base
    warehouse is not on S3). Table locks are private too: they are named by the catalog.
    """

    def __init__(self, base: "Settings", label: str, workdir: Path | None = None,
                 layers: Iterable[str] = ("bronze",)):
        from tasks.settings import AUDIT

        self.name = unique(label)
        # the flows append what they record about themselves (DQ results, lineage) to audit
        self.layers = tuple(dict.fromkeys((*layers, AUDIT)))
        self.own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        update = {
            "catalog_type": "sql",
            "catalog_uri": f"sqlite:///{self.workdir / 'catalog.db'}",
            "bucket_prefix": self.name,
            "kafka_consumer_group": self.name,
        }
        if not base.uses_s3:
            update["warehouse"] = (self.workdir / "warehouse").as_uri()
        self.base = base
        # its buckets are its own: the stack's per-role S3 identities cover only the lakehouse's
        # buckets, so every role of a private lake signs with the single (admin) pair
        self.settings = base.model_copy(update=update).without_role_credentials()
        for layer in self.layers:  # never one of the lakehouse's own buckets
            assert self.settings.bucket(layer) != base.bucket(layer)

    def describe(self) -> dict:
        s = self.settings
        return {"catalog": s.catalog_uri, "store": ", ".join(s.layer_location(layer) for layer in self.layers),
                "kafka_consumer_group": s.kafka_consumer_group,
                "note": "private: never the tables, buckets or consumer group of the lakehouse the settings point at"}

    def create(self) -> "PrivateLake":
        """The layers' buckets (on S3) and namespaces."""
        from pyiceberg.exceptions import NamespaceAlreadyExistsError

        from tasks.catalog import open_catalog, s3_client

        if self.settings.uses_s3:
            client = s3_client(self.settings, "admin")
            for layer in self.layers:
                client.create_bucket(Bucket=self.settings.bucket(layer))
        catalog = open_catalog(self.settings, "admin")
        for layer in self.layers:
            try:
                catalog.create_namespace(layer, {"location": self.settings.layer_location(layer)})
            except NamespaceAlreadyExistsError:
                pass
        return self

    def drop(self) -> None:
        """Delete the buckets with everything in them, the consumer group and the work folder."""
        from tasks.catalog import s3_client
        from tasks.maintenance.storage import delete_files, list_files

        problems = []
        if self.settings.uses_s3:
            client = s3_client(self.settings, "admin")
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            for layer in self.layers:
                bucket = self.settings.bucket(layer)
                if not bucket.startswith(PREFIX) or bucket not in existing:
                    continue
                try:
                    delete_files([f.uri for f in list_files(f"s3://{bucket}", self.settings)], self.settings)
                    client.delete_bucket(Bucket=bucket)
                except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
                    problems.append(f"bucket {bucket}: {exc}")
        try:
            drop_consumer_group(self.settings, self.settings.kafka_consumer_group)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"consumer group {self.settings.kafka_consumer_group}: {exc}")
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        for problem in problems:
            print(f"could not delete the private lakehouse's {problem}", file=sys.stderr)


# ---- Kafka ------------------------------------------------------------------------------------------


def private_topic(settings: "Settings", label: str, partitions: int = 3) -> "Settings":
    """A new, uniquely named ``bench-<label>-<hex>`` topic; returns settings pointing at it."""
    from tasks.kafka import ensure_topic

    topic = unique(label)
    if not ensure_topic(settings, topic, partitions=partitions):
        raise RuntimeError(f"topic {topic} exists already")
    return settings.model_copy(update={"kafka_topic": topic})


def drop_topic(settings: "Settings", topic: str) -> None:
    """Delete a topic a benchmark created (only ``bench-...`` topics: never the lakehouse's)."""
    from tasks.kafka import admin_client

    if not topic.startswith(PREFIX):
        raise ValueError(f"refusing to delete topic {topic!r}: benchmarks delete only their own {PREFIX}* topics")
    admin = admin_client(settings)
    if topic not in admin.list_topics(timeout=10).topics:
        return
    admin.delete_topics([topic])[topic].result(timeout=30)
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)


def drop_consumer_group(settings: "Settings", group: str) -> None:
    from tasks.kafka import admin_client

    if not group.startswith(PREFIX):
        raise ValueError(f"refusing to delete consumer group {group!r}: not a benchmark's")
    try:
        admin_client(settings).delete_consumer_groups([group], request_timeout=30)[group].result(timeout=30)
    except Exception as exc:  # noqa: BLE001 - a group that never committed does not exist
        if "GROUP_ID_NOT_FOUND" not in str(exc) and "not found" not in str(exc).lower():
            raise


# ---- Prefect ------------------------------------------------------------------------------------------


def prefect_tag(settings: "Settings") -> str:
    """``bench-<catalog tag>`` in the alphabet of Prefect artifact keys."""
    return re.sub(r"[^a-z0-9-]+", "-", f"bench-{settings.catalog_tag}".lower())


def isolate_prefect(settings: "Settings") -> str:
    """Keep this process's flows from reaching the lakehouse's Prefect objects.

    * ``tasks.orchestration.emit_table_committed`` still emits one ``lakehouse.table.committed``
      event per commit (same cost), but its resource is ``<tag>.table.<identifier>``, not
      ``lakehouse.table.<identifier>``: the lakehouse's silver and gold deployment triggers match
      the latter, so a benchmark's commit never starts a run that writes the lakehouse's tables.
    * Artifacts (``publish_counts``, gold's latest-day markdown) get the key ``<tag>-<key>``: the
      lakehouse's own keyed artifacts never show a benchmark's figures as their latest version.

    Returns the tag. Flow runs and task runs still go to the Prefect server, as the tests' do.
    """
    import prefect.artifacts as artifacts

    import tasks.orchestration as orchestration

    tag = prefect_tag(settings)
    orchestration.table_resource = lambda identifier: f"{tag}.table.{identifier}"
    for name in ("create_table_artifact", "create_markdown_artifact", "create_link_artifact",
                 "create_progress_artifact", "create_image_artifact"):
        create = getattr(artifacts, name, None)
        if create is None or getattr(create, "_bench_private", False):
            continue

        def private(*args, _create=create, key: str | None = None, **kwargs):
            return _create(*args, key=f"{tag}-{key}" if key else None, **kwargs)

        private = functools.wraps(create)(private)
        private._bench_private = True  # type: ignore[attr-defined]
        setattr(artifacts, name, private)
    return tag


def cli_command(*args: str) -> list[str]:
    """The ``lakehouse`` command line, run through this module so that ``isolate_prefect`` applies."""
    return [sys.executable, str(Path(__file__).resolve()), "cli", *args]


def _cli_main(args: list[str]) -> int:
    from tasks.settings import load_settings

    isolate_prefect(load_settings())  # the child's settings: the private lakehouse's LAKEHOUSE_*
    from flows.cli import app

    sys.argv = ["lakehouse", *args]
    return app()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "cli":
        raise SystemExit("usage: python benchmarks/private_lake.py cli LAKEHOUSE-ARGS...")
    sys.exit(_cli_main(sys.argv[2:]))
