"""Peers side by side (issue 18): Spark 4.0 Structured Streaming + Iceberg and Iceberg's Kafka Connect
sink 1.10.1 beside our own paths, on the same machine, topic and stack.

    make peers                        # once: pyspark venv, jars, Connect and the sink plugin
    .venv/bin/python benchmarks/peers.py [--events 1000000] [--parts ingest,connect,freshness,silver] [--merge]

Never writes the tables, topics, buckets or consumer groups of the lakehouse it is pointed at:

* the topics are ``bench-peers-*`` topics of its own (created and deleted here);
* Spark and Connect write tables in a namespace of their own, ``bench_peers_<hex>``, in the stack's
  REST catalog, located in a bucket of their own, ``bench-peers-<hex>``, on the stack's S3 (the
  tables are created here with an explicit location and dropped with their files at the end);
* our own path runs through benchmarks/ingest_rate.py and benchmarks/freshness.py helpers on a
  ``PrivateLake`` (SQLite catalog, ``bench-*`` buckets on the same S3, private consumer group);
* the silver part promotes in a private file lakehouse (``--silver-workdir``: SQLite catalog, local
  file warehouse, silver_promotion.py's setup), restored before every run.

Parts (each on the same topic/data for all systems):

1. ``ingest``: ``--events`` simulator events produced once; our ``lakehouse run ingest
   --until-caught-up`` (warm writers), then Spark (``trigger(availableNow)``, start-up timed
   separately) drain the same topic into bronze-shaped tables.
2. ``connect``: the Iceberg sink (standalone worker, ``tasks.max`` 2) drains the same topic at each
   ``--connect-intervals`` commit interval: rate, commit latency (the coordinator's "initiated" →
   "complete" lines) and data files written.
3. ``freshness``: steady ``--fresh-rate`` events/s for ``--fresh-seconds``; event → committed bronze
   row for Spark with 10 s and 60 s triggers and for our continuous mode with 10 s and 60 s commit
   bounds, and for the Connect sink at each ``--fresh-connect-intervals`` commit interval, measured
   the same way from each table's snapshots (``commit_latencies``).
4. ``silver``: ``--silver-events`` new bronze records promoted into the silver facts of
   ``--silver-history`` earlier records (silver_promotion.py's lakehouse): our ``silver_flow`` per
   ``--silver-runners`` runner, then infra/peers/spark_silver.py (Spark SQL with silver's rules,
   first-arrival dedup, anti-join against history, quarantine) on the same tables; wall time
   (Spark's start-up apart), records/s, peak RSS, and both outputs compared (``compare_outputs``).

Peak memory of every part: RSS of the measured process tree (Spark's python and JVM, Connect's JVM,
our CLI or flow process) plus, for ours, the Ray workers working for it (``TreeMemory``), sampled
every ``--interval`` seconds.

Writes benchmarks/results/peers.json. Prints figures; never asserts. Spark runs in the peers'
virtualenv (.lakehouse/peers/venv), Connect from .lakehouse/peers/jars; neither is imported here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from calendar import timegm
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)

from sampling import PeriodicSampler, job_of, mb, process_tree, ray_workers, read_processes, read_status  # noqa: E402
os.environ.setdefault("LAKEHOUSE_CONFIG", str(ROOT / "infra" / "stack.toml"))

RESULT = BENCH / "results" / "peers.json"
PEERS = ROOT / ".lakehouse" / "peers"
SPARK_PYTHON = PEERS / "venv" / "bin" / "python"
SPARK_JOB = ROOT / "infra" / "peers" / "spark_stream.py"
CONNECT_JARS = PEERS / "jars" / "connect-runtime"
CONNECT_PLUGINS = PEERS / "plugins"
CONNECT_LOG4J = ROOT / "infra" / "peers" / "connect-log4j2.properties"
PARTITIONS = 3
TARGETS = {"ingest": "ahead of both peers", "freshness": "ahead of both peers",
           "silver": "no slower than Spark"}


# ---- pure parts (tests/unit/test_peers_harness.py) -----------------------------------------------------

def snapshot_marks(snapshots: list[tuple[float, list[tuple[int, int]]]]) -> list[tuple[float, dict[int, int]]]:
    """Per snapshot (commit time, rows visible in it as (partition, offset)): the highest offset per
    partition it holds, in commit order."""
    marks = []
    for committed, rows in sorted(snapshots, key=lambda s: s[0]):
        high: dict[int, int] = {}
        for partition, offset in rows:
            if offset > high.get(partition, -1):
                high[partition] = offset
        marks.append((committed, high))
    return marks


def commit_latencies(marks: list[tuple[float, dict[int, int]]],
                     rows: list[tuple[int, int, float]]) -> list[float]:
    """Event → commit seconds per row (partition, offset, event time): the row's commit is the first
    snapshot whose highest offset in its partition reaches the row's offset. Rows no snapshot
    covers are left out (not committed)."""
    out = []
    for partition, offset, event_at in rows:
        for committed, high in marks:
            if high.get(partition, -1) >= offset:
                out.append(committed - event_at)
                break
    return out


def percentiles(values: list[float]) -> dict:
    """Nearest-rank percentiles, as benchmarks/freshness.py reports them."""
    if not values:
        return {"p50": None, "p95": None, "max": None, "mean": None, "n": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 2)

    return {"p50": rank(50), "p95": rank(95), "max": round(ordered[-1], 2),
            "mean": round(statistics.fmean(ordered), 2), "n": len(ordered)}


_CONNECT_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d),(\d{3})\] \w+ (.*)$")
_INITIATED = re.compile(r"[Cc]ommit (\S+) initiated|initiated commit (\S+)")  # 1.10 / later wording
_COMPLETE = re.compile(r"[Cc]ommit (\S+) complete")


def connect_commits(log: str) -> list[dict]:
    """The Iceberg sink coordinator's commits from the worker log: id, initiated and completed (epoch
    seconds, UTC) and the seconds between; commits never completed are left out."""
    started: dict[str, float] = {}
    done = []
    for line in log.splitlines():
        m = _CONNECT_LINE.match(line)
        if not m:
            continue
        at = timegm(time.strptime(m[1], "%Y-%m-%dT%H:%M:%S")) + int(m[2]) / 1000
        if (i := _INITIATED.search(m[3])):
            started[i[1] or i[2]] = at
        elif (c := _COMPLETE.search(m[3])) and c[1] in started:
            done.append({"commit": c[1], "initiated": started[c[1]], "completed": at,
                         "seconds": round(at - started[c[1]], 3)})
    return done


def connector_properties(name: str, topic: str, table: str, control_topic: str, interval_ms: int,
                         catalog_uri: str, s3_endpoint: str, s3_region: str, tasks: int = 2) -> dict[str, str]:
    """The Iceberg sink's configuration: raw value bytes hoisted into a struct with the Kafka
    coordinates added by Kafka's own SMTs (our bronze's shape), secrets as ${env:...} references."""
    return {
        "name": name,
        "connector.class": "org.apache.iceberg.connect.IcebergSinkConnector",
        "tasks.max": str(tasks),
        "topics": topic,
        "consumer.override.group.id": f"{name}-sink",
        "iceberg.connect.group-id": f"{name}-sink",  # the sink looks its own group up by this
        "consumer.override.auto.offset.reset": "earliest",
        "iceberg.tables": table,
        "iceberg.tables.auto-create-enabled": "false",
        "iceberg.control.topic": control_topic,
        "iceberg.control.group-id-prefix": f"{name}-ctl",
        "iceberg.control.commit.interval-ms": str(interval_ms),
        "iceberg.catalog.type": "rest",
        "iceberg.catalog.uri": catalog_uri,
        "iceberg.catalog.token": "${env:PEERS_CATALOG_TOKEN}",
        "iceberg.catalog.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "iceberg.catalog.s3.endpoint": s3_endpoint,
        "iceberg.catalog.s3.path-style-access": "true",
        "iceberg.catalog.client.region": s3_region,
        "iceberg.catalog.s3.access-key-id": "${env:PEERS_S3_ACCESS_KEY_ID}",
        "iceberg.catalog.s3.secret-access-key": "${env:PEERS_S3_SECRET_ACCESS_KEY}",
        "transforms": "hoist,coordinates",
        "transforms.hoist.type": "org.apache.kafka.connect.transforms.HoistField$Value",
        "transforms.hoist.field": "value",
        "transforms.coordinates.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.coordinates.topic.field": "topic",
        "transforms.coordinates.partition.field": "partition",
        "transforms.coordinates.offset.field": "offset",
        "transforms.coordinates.timestamp.field": "kafka_timestamp",
    }


def ratio(ours: float | None, peer: float | None, higher_is_better: bool = True) -> float | None:
    """How many times better we are (>1: we win), whatever the figure's direction."""
    if not ours or not peer:
        return None
    return round(ours / peer if higher_is_better else peer / ours, 2)


def properties_text(props: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in props.items())


def memory_peaks(samples: list[dict], counted: set[str] | None = None) -> dict:
    """Peaks (MB) of sampled RSS: each sample is {"tree": bytes of the measured process tree,
    "workers": {key: bytes of the Ray workers under that key}}; only ``counted`` keys add up (all
    when None). Tree + workers is taken at the same instant, not as the sum of two peaks."""
    if not samples:
        return {"process_tree_peak_rss_mb": None, "ray_workers_peak_rss_mb": None,
                "peak_tree_plus_workers_mb (same instant)": None, "samples": 0}

    def workers(sample: dict) -> int:
        return sum(v for k, v in sample.get("workers", {}).items() if counted is None or k in counted)

    return {"process_tree_peak_rss_mb": mb(max(x["tree"] for x in samples)),
            "ray_workers_peak_rss_mb": mb(max(workers(x) for x in samples)),
            "peak_tree_plus_workers_mb (same instant)": mb(max(x["tree"] + workers(x) for x in samples)),
            "samples": len(samples)}


def _rss(pid: int) -> int:
    return (read_status(pid) or {}).get("VmRSS", 0)


class TreeMemory(PeriodicSampler):
    """RSS of a process tree and, with ``ray``, of the Ray workers working for it: the bronze writer
    actors and the workers of Ray jobs that appear after the first sample (the flow's own job, its
    Daft host). ``watch`` is ingest_rate.run_cli_ingest's watcher hook."""

    WRITERS = "bronze-writer actors"

    def __init__(self, interval: float, ray: bool = False, root: int | None = None):
        super().__init__(interval)
        self.root, self.ray = root, ray
        self.samples: list[dict] = []
        self.jobs: dict[int, str | None] = {}
        self.existing_jobs: set[str] | None = None

    def watch(self, pid: int, stop: threading.Event) -> None:
        self.root = pid
        while not stop.is_set():
            self.sample()
            stop.wait(self.interval)

    def sample(self) -> None:
        procs = read_processes()
        tree = sum(_rss(pid) for pid in process_tree(self.root, procs)) if self.root is not None else 0
        workers: dict[str, int] = {}
        if self.ray:
            for pid in ray_workers(procs):
                cmd = procs[pid][1]
                if pid not in self.jobs:
                    self.jobs[pid] = job_of(pid)
                key = self.WRITERS if "BronzeWriter" in cmd else self.jobs[pid]
                if key:
                    workers[key] = workers.get(key, 0) + _rss(pid)
            if self.existing_jobs is None:
                self.existing_jobs = set(workers) - {self.WRITERS}
        if self.root is not None:  # before the root starts: only the Ray jobs already there are noted
            self.samples.append({"t": time.time(), "tree": tree, "workers": workers})

    def summary(self) -> dict:
        seen = {k for x in self.samples for k in x["workers"]}
        counted = seen - (self.existing_jobs or set())
        return {**memory_peaks(self.samples, counted if self.ray else set()),
                "ray_worker_keys_counted": sorted(counted) if self.ray else []}


# ---- the peers' private namespace and bucket in the stack's REST catalog --------------------------------

class PeerLake:
    """A namespace ``bench_peers_<hex>`` in the stack's REST catalog with its tables in a bucket
    ``bench-peers-<hex>`` of the stack's S3: the peers' only place to write."""

    def __init__(self, base):
        from tasks.catalog import open_catalog, s3_client

        self.base = base
        hexid = uuid.uuid4().hex[:8]
        self.namespace = f"bench_peers_{hexid}"
        self.bucket = f"bench-peers-{hexid}"
        self.catalog = open_catalog(base, "admin")
        self.s3 = s3_client(base, "admin")
        self.tables: list[str] = []
        self.s3.create_bucket(Bucket=self.bucket)
        self.catalog.create_namespace(self.namespace)

    def create_bronze(self, name: str) -> str:
        """Our bronze's columns (all optional: the Connect sink fills no key or ingest time)."""
        from pyiceberg.partitioning import PartitionField, PartitionSpec
        from pyiceberg.schema import Schema
        from pyiceberg.transforms import DayTransform
        from pyiceberg.types import BinaryType, IntegerType, LongType, NestedField, StringType, TimestamptzType

        schema = Schema(
            NestedField(1, "topic", StringType(), required=False),
            NestedField(2, "partition", IntegerType(), required=False),
            NestedField(3, "offset", LongType(), required=False),
            NestedField(4, "kafka_timestamp", TimestamptzType(), required=False),
            NestedField(5, "key", BinaryType(), required=False),
            NestedField(6, "value", BinaryType(), required=False),
            NestedField(7, "ingested_at", TimestamptzType(), required=False),
        )
        spec = PartitionSpec(PartitionField(source_id=4, field_id=1000, transform=DayTransform(), name="kafka_day"))
        identifier = f"{self.namespace}.{name}"
        self.catalog.create_table(identifier, schema, location=f"s3://{self.bucket}/{name}", partition_spec=spec,
                                  properties={"write.parquet.compression-codec": "zstd"})
        self.tables.append(identifier)
        return identifier

    def drop(self) -> None:
        from tasks.maintenance.storage import delete_files, list_files

        for identifier in self.tables:
            try:
                self.catalog.drop_table(identifier)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"could not drop {identifier}: {exc}", file=sys.stderr)
        try:
            self.catalog.drop_namespace(self.namespace)
        except Exception as exc:  # noqa: BLE001
            print(f"could not drop namespace {self.namespace}: {exc}", file=sys.stderr)
        try:
            delete_files([f.uri for f in list_files(f"s3://{self.bucket}", self.base)], self.base)
            self.s3.delete_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001
            print(f"could not delete bucket {self.bucket}: {exc}", file=sys.stderr)


def peer_env(base) -> dict[str, str]:
    """The peers' secrets, for their processes only (never argv, never printed)."""
    key_id, secret = base.s3_credentials("admin")
    token = base.catalog_token.get_secret_value() if base.catalog_token else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    return {**env, "PEERS_S3_ACCESS_KEY_ID": key_id, "PEERS_S3_SECRET_ACCESS_KEY": secret,
            "PEERS_CATALOG_TOKEN": token, "AWS_REGION": base.s3_region}


def table_snapshots(catalog, identifier: str) -> list[dict]:
    table = catalog.load_table(identifier)
    out = []
    for s in table.snapshots():
        summary = s.summary.additional_properties if s.summary else {}
        out.append({"snapshot_id": s.snapshot_id, "at": s.timestamp_ms / 1000,
                    "total_records": int(summary.get("total-records", 0)),
                    "added_records": int(summary.get("added-records", 0)),
                    "added_files": int(summary.get("added-data-files", 0))})
    return sorted(out, key=lambda s: s["at"])


def table_latencies(catalog, identifier: str, since: float = 0.0) -> list[float]:
    """Event → commit seconds for every row of the table (event time: the Kafka timestamp, which
    the producer sets at send)."""
    table = catalog.load_table(identifier)
    snapshots = []
    for s in table.snapshots():
        if s.timestamp_ms / 1000 < since:
            continue
        rows = table.scan(snapshot_id=s.snapshot_id, selected_fields=("partition", "offset")).to_arrow()
        snapshots.append((s.timestamp_ms / 1000, list(zip(rows.column("partition").to_pylist(),
                                                          rows.column("offset").to_pylist()))))
    final = table.scan(selected_fields=("partition", "offset", "kafka_timestamp")).to_arrow()
    events = [(p, o, ts.timestamp()) for p, o, ts in zip(final.column("partition").to_pylist(),
                                                       final.column("offset").to_pylist(),
                                                       final.column("kafka_timestamp").to_pylist())]
    return commit_latencies(snapshot_marks(snapshots), events)


def wait_for_records(catalog, identifier: str, expected: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        snaps = table_snapshots(catalog, identifier)
        if (snaps and snaps[-1]["total_records"] >= expected) or time.monotonic() > deadline:
            return snaps
        time.sleep(1.0)


# ---- Spark -------------------------------------------------------------------------------------------------

def collect_milestones(lines, events: dict[str, dict]) -> None:
    """A Spark job's JSON milestone lines (infra/peers/spark_job.say) into ``events`` by name; other
    lines (Spark's own chatter) are skipped."""
    for line in lines:
        try:
            event = json.loads(line)
            events[event["event"]] = event
        except (json.JSONDecodeError, KeyError, TypeError):
            continue


class Spark:
    """infra/peers/spark_stream.py in the peers' virtualenv; its JSON milestone lines are collected."""

    def __init__(self, base, lake: PeerLake, mode: str, topic: str, table: str, trigger_seconds: float = 10.0):
        self.command = [str(SPARK_PYTHON), str(SPARK_JOB), mode, "--bootstrap", base.kafka_bootstrap,
                        "--topic", topic, "--table", table, "--catalog-uri", base.catalog_uri,
                        "--s3-endpoint", base.s3_endpoint, "--s3-region", base.s3_region,
                        "--trigger-seconds", str(trigger_seconds)]
        self.env = peer_env(base)
        self.log = tempfile.NamedTemporaryFile("w+", prefix="peers-spark-", suffix=".log", delete=False)
        self.events: dict[str, dict] = {}
        self.process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> float:
        launched = time.time()
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return launched

    def _read(self) -> None:
        collect_milestones(self.process.stdout, self.events)

    def wait_for(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while event not in self.events:
            if self.process.poll() is not None and event not in self.events:
                time.sleep(0.5)
                if event in self.events:
                    break
                self.log.seek(0)
                raise RuntimeError(f"Spark exited ({self.process.returncode}) before {event}: "
                                   f"{self.log.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Spark: no {event} in {timeout} s")
            time.sleep(0.2)
        return self.events[event]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        os.unlink(self.log.name)


# ---- Kafka Connect -------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Connect:
    """A standalone Connect worker (connect-runtime 4.1.1) with the Iceberg sink plugin folder."""

    def __init__(self, base, name: str, topic: str, table: str, control_topic: str, interval_ms: int):
        self.work = Path(tempfile.mkdtemp(prefix="peers-connect-"))
        self.log_path = self.work / "connect.log"
        worker = {
            "bootstrap.servers": base.kafka_bootstrap,
            "key.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
            "value.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
            "offset.storage.file.filename": str(self.work / "offsets"),
            "offset.flush.interval.ms": "10000",
            "plugin.path": str(CONNECT_PLUGINS),
            "listeners": f"http://127.0.0.1:{free_port()}",
            "connector.client.config.override.policy": "All",
            "config.providers": "env",
            "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
        }
        (self.work / "worker.properties").write_text(properties_text(worker))
        (self.work / "sink.properties").write_text(properties_text(connector_properties(
            name, topic, table, control_topic, interval_ms, base.catalog_uri, base.s3_endpoint, base.s3_region)))
        self.command = ["java", "-Xmx1g", f"-Dlog4j2.configurationFile={CONNECT_LOG4J}",
                        f"-Dpeers.log={self.log_path}", "-cp", f"{CONNECT_JARS}/*",
                        "org.apache.kafka.connect.cli.ConnectStandalone",
                        str(self.work / "worker.properties"), str(self.work / "sink.properties")]
        self.env = peer_env(base)
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        launched = time.time()
        self.process = subprocess.Popen(self.command, cwd=self.work, env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        return launched

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def started_at(self) -> float | None:
        """When the worker finished starting: its 'Kafka Connect started' line (epoch seconds)."""
        for line in self.log().splitlines():
            m = _CONNECT_LINE.match(line)
            if m and ("Kafka Connect started" in m[3]):
                return timegm(time.strptime(m[1], "%Y-%m-%dT%H:%M:%S")) + int(m[2]) / 1000
        return None

    def stop(self) -> None:
        import shutil

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def drop_groups_with_prefix(settings, prefix: str) -> None:
    from private_lake import PREFIX, drop_consumer_group
    from tasks.kafka import admin_client

    assert prefix.startswith(PREFIX)
    listed = admin_client(settings).list_consumer_groups(request_timeout=10).result()
    for group in listed.valid:
        if group.group_id.startswith(prefix):
            drop_consumer_group(settings, group.group_id)


# ---- silver promotion: the shared input (silver_promotion.py's setup) -----------------------------------

def silver_workdir_key(history: int, events: int, days: int, seed: int) -> str:
    return f"{history}-{events}-{days}-{seed}"


def silver_setup(workdir: Path, history: int, events: int, days: int, seed: int) -> tuple[Path, dict]:
    """The private file lakehouse both systems promote in (silver_promotion.py's ``big`` lake: silver
    holding ``history`` records' facts, bronze the next ``events``); built once, cached by its key."""
    import silver_promotion as sp

    workdir.mkdir(parents=True, exist_ok=True)
    key = silver_workdir_key(history, events, days, seed)
    lake, setup_file = workdir / f"lake-{key}", workdir / f"setup-{key}.json"
    if setup_file.exists() and (lake / "catalog.pristine.db").exists():
        return lake, json.loads(setup_file.read_text())
    import daft

    daft.set_runner_native()  # setup only; the measured runs are processes of their own
    total = history + events
    stream = workdir / f"stream-{total}-{days}-{seed}.parquet"
    setup: dict = {}
    if not stream.exists():
        print(f"generating {total:,} simulator records over {days} days ...", flush=True)
        setup["generate"] = sp.generate_stream(stream, total, days, seed)
    new = sp.read_stream(stream, history, total)
    kinds = new.group_by("kind").aggregate([("seq", "count")]).to_pydict()
    setup["new_batch_kinds"] = dict(zip(kinds["kind"], kinds["seq_count"]))
    print(f"building the private lakehouse: silver from {history:,} records, bronze {events:,} ...", flush=True)
    setup["lake"] = sp.build_lakehouse(lake, sp.read_stream(stream, 0, history), new)
    setup_file.write_text(json.dumps(setup))
    return lake, setup


SPARK_SILVER_JOB = ROOT / "infra" / "peers" / "spark_silver.py"


def silver_rules(max_bytes: int, numerals: list[str], required_v1, required_v2, plans, error_codes) -> dict:
    """Silver's rules as plain data for the Spark job (which imports nothing of the lakehouse):
    ``numerals[n - 1]`` is n's numeral."""
    if len(numerals) != 3999 or not all(numerals):
        raise ValueError(f"numerals: expected the 3999 numerals of 1..3999, got {len(numerals)}")
    return {"max_bytes": int(max_bytes), "numerals": list(numerals), "required_v1": list(required_v1),
            "required_v2": list(required_v2), "plans": list(plans), "error_codes": list(error_codes)}


def lake_rules(settings) -> dict:
    from tasks.roman import NUMERALS
    from tasks.transforms.contract import ERROR_CODES, PLANS, REQUIRED_V1, REQUIRED_V2

    return silver_rules(settings.silver_max_value_bytes, list(NUMERALS[1:4000]), REQUIRED_V1, REQUIRED_V2,
                        PLANS, ERROR_CODES)


def compare_outputs(ours: dict, spark: dict, ours_ids: set[str], spark_ids: set[str]) -> dict:
    """Facts, rejected and distinct inserted event ids of both systems, with the differences named."""
    only_ours, only_spark = sorted(ours_ids - spark_ids), sorted(spark_ids - ours_ids)
    out = {
        "facts": {"ours": ours.get("facts"), "spark": spark.get("facts_inserted")},
        "rejected": {"ours": ours.get("rejected"), "spark": spark.get("rejected")},
        "distinct_event_ids_inserted": {"ours": len(ours_ids), "spark": len(spark_ids)},
        "event_ids_only_ours": len(only_ours), "event_ids_only_spark": len(only_spark),
        "sample_only_ours": only_ours[:5], "sample_only_spark": only_spark[:5],
    }
    reasons_ours, reasons_spark = ours.get("reasons") or {}, spark.get("reasons") or {}
    out["reasons_differing"] = {code: {"ours": reasons_ours.get(code, 0), "spark": reasons_spark.get(code, 0)}
                                for code in sorted(set(reasons_ours) | set(reasons_spark))
                                if reasons_ours.get(code, 0) != reasons_spark.get(code, 0)}
    out["same"] = (out["facts"]["ours"] == out["facts"]["spark"] and out["rejected"]["ours"] == out["rejected"]["spark"]
                   and not only_ours and not only_spark and not out["reasons_differing"])
    return out


def run_spark_silver(lake: Path, workdir: Path, interval: float, cores: int, driver_memory: str) -> dict:
    """infra/peers/spark_silver.py on the lake's pristine tables while /proc is sampled (the driver's
    python and its JVM); start-up (launch → session ready) is reported apart from the job."""
    import silver_promotion as sp
    from private_lake import file_lake
    from tasks.catalog import open_catalog
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, SILVER_CONVERSION_EVENTS_REJECTED, SILVER_FACT_CONVERSIONS

    sp.reset(lake)
    settings = file_lake(lake)
    catalog = open_catalog(settings, "silver")
    stamp = time.time_ns()
    spec = {"bronze_metadata": catalog.load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier).metadata_location,
            "facts_metadata": catalog.load_table(SILVER_FACT_CONVERSIONS.identifier).metadata_location,
            "rejected_metadata": catalog.load_table(SILVER_CONVERSION_EVENTS_REJECTED.identifier).metadata_location,
            "warehouse": (workdir / f"spark-warehouse-{stamp}").as_uri(),
            "inserted_ids": str(workdir / f"spark-inserted-ids-{stamp}"),
            "rules": lake_rules(settings)}
    spec_path, out = workdir / f"spark-silver-{stamp}.spec.json", workdir / f"spark-silver-{stamp}.json"
    log = out.with_suffix(".log")
    spec_path.write_text(json.dumps(spec))
    command = [str(SPARK_PYTHON), str(SPARK_SILVER_JOB), "--spec", str(spec_path), "--out", str(out),
               "--cores", str(cores), "--driver-memory", driver_memory]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    events: dict[str, dict] = {}
    load_before = round(os.getloadavg()[0], 2)
    launched = time.time()
    with open(log, "w") as logf:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=logf, text=True)

        reader = threading.Thread(target=collect_milestones, args=(process.stdout, events), daemon=True)
        reader.start()
        with sp.Sampler(process.pid, interval) as sampler:
            _, status, _ = os.wait4(process.pid, 0)  # no CPU figure: the JVM is not a child it reaps
            process.returncode = rc = os.waitstatus_to_exitcode(status)
        reader.join(timeout=10)
    ended = time.time()
    if rc != 0 or not out.exists():
        print(f"  !! Spark silver failed (rc {rc}); log {log}:\n{log.read_text()[-3000:]}", flush=True)
        return {"failed": True, "rc": rc, "log": str(log)}
    result = json.loads(out.read_text())
    ready, done = events["session_ready"]["at"], events["done"]["at"]
    records = result["counts"]["bronze_records"]
    result.update({
        "startup_s": round(ready - launched, 3),
        "launch_to_done_s": round(done - launched, 3),
        "process_seconds": round(ended - launched, 2),
        "records_per_s": round(records / result["seconds"]) if result["seconds"] else None,
        "records_per_s_with_startup": round(records / (done - launched)),
        "memory": sampler.summary(None),
        "load_avg_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "log": str(log),
        "_inserted_ids": spec["inserted_ids"],
    })
    shutil.rmtree(workdir / f"spark-warehouse-{stamp}", ignore_errors=True)
    sp.reset(lake)
    return result


# ---- the parts ----------------------------------------------------------------------------------------------------

def part_ingest(base, lake: PeerLake, events: int, result: dict, interval: float = 0.5) -> None:
    import ingest_rate as ours
    from private_lake import drop_topic

    own = ours.private_lake("peers-ours")
    topic_settings = ours.new_topic(own.settings, "peers-ingest")
    topic = topic_settings.kafka_topic
    result["ingest_topic"] = topic
    try:
        print(f"producing {events:,} events to {topic} ...", flush=True)
        result["produce"] = ours.produce_backlog(topic_settings, events)
        total = sum(result["produce"]["per_partition"].values())
        print(f"  {result['produce']['events_per_s']:,} events/s", flush=True)

        print("[ours] lakehouse run ingest --until-caught-up ...", flush=True)
        memory = TreeMemory(interval, ray=True)
        cli = ours.summarize_cli(topic_settings, ours.run_cli_ingest(topic_settings, watcher=memory.watch))
        result["ours_ingest"] = {k: cli[k] for k in (
            "records", "batches", "launch_to_last_commit_s", "launch_to_first_flow_begin_s",
            "first_flow_begin_to_last_commit_s", "events_per_s", "events_per_s_in_flows")}
        result["ours_ingest"]["memory"] = memory.summary()
        print(f"  ours: {cli['events_per_s']:,} events/s launch → last commit; {cli['events_per_s_in_flows']:,} "
              f"inside the flows ({cli['records']:,} in {cli['launch_to_last_commit_s']} s)", flush=True)

        print("[spark] availableNow drain ...", flush=True)
        table = lake.create_bronze("spark_bronze")
        spark = Spark(base, lake, "ingest", topic, table)
        launched = spark.start()
        try:
            with TreeMemory(interval, root=spark.process.pid) as memory:
                ready = spark.wait_for("session_ready", 600)["at"]
                started = spark.wait_for("query_started", 600)["at"]
                finished = spark.wait_for("query_finished", 3600)
        finally:
            spark.stop()
        snaps = table_snapshots(lake.catalog, table)
        last_commit = snaps[-1]["at"] if snaps else finished["at"]
        records = snaps[-1]["total_records"] if snaps else 0
        result["spark_ingest"] = {
            "records": records, "expected": total, "commits": len(snaps),
            "files": sum(s["added_files"] for s in snaps),
            "startup_s": round(ready - launched, 3),
            "query_start_to_last_commit_s": round(last_commit - started, 3),
            "launch_to_last_commit_s": round(last_commit - launched, 3),
            "events_per_s": round(records / (last_commit - started)) if last_commit > started else None,
            "events_per_s_with_startup": round(records / (last_commit - launched)),
            "memory": memory.summary(),
        }
        r = result["spark_ingest"]
        print(f"  spark: start-up {r['startup_s']} s; {r['events_per_s']:,} events/s query start → last commit "
              f"({records:,} in {r['query_start_to_last_commit_s']} s, {r['commits']} commits, {r['files']} files); "
              f"{r['events_per_s_with_startup']:,} with start-up", flush=True)
    except BaseException:
        drop_topic(topic_settings, topic)
        own.drop()
        raise
    result["_ingest_cleanup"] = (topic_settings, own)


def part_connect(base, lake: PeerLake, topic: str, expected: int, interval_s: int, result: dict,
                 interval: float = 0.5) -> None:
    from private_lake import drop_topic, unique
    from tasks.kafka import ensure_topic

    name = unique(f"peers-connect{interval_s}")
    control = f"{name}-control"
    ensure_topic(base, control, partitions=1)
    table = lake.create_bronze(f"connect_bronze_{interval_s}s")
    connect = Connect(base, name, topic, table, control, interval_s * 1000)
    print(f"[connect] commit interval {interval_s} s, draining {expected:,} events ...", flush=True)
    launched = connect.start()
    try:
        with TreeMemory(interval, root=connect.process.pid) as memory:
            snaps = wait_for_records(lake.catalog, table, expected, timeout=max(900, 3 * interval_s + 600))
        time.sleep(2)
        log = connect.log()
        started = connect.started_at()
    finally:
        connect.stop()
        try:
            drop_topic(base, control)
            drop_groups_with_prefix(base, name)
        except Exception as exc:  # noqa: BLE001
            print(f"could not clean Connect's topic/groups: {exc}", file=sys.stderr)
    commits = connect_commits(log)
    records = snaps[-1]["total_records"] if snaps else 0
    last = next((s["at"] for s in snaps if s["total_records"] >= expected), snaps[-1]["at"] if snaps else None)
    errors = [line for line in log.splitlines() if " ERROR " in line][:5]
    entry = {
        "commit_interval_s": interval_s, "records": records, "expected": expected, "commits": len(snaps),
        "files": sum(s["added_files"] for s in snaps),
        "files_per_commit": round(sum(s["added_files"] for s in snaps) / max(1, len(snaps)), 1),
        "startup_s": round(started - launched, 3) if started else None,
        "launch_to_last_commit_s": round(last - launched, 3) if last else None,
        "events_per_s_with_startup": round(records / (last - launched)) if last else None,
        "events_per_s": round(records / (last - started)) if last and started else None,
        "commit_latency_s": percentiles([c["seconds"] for c in commits]),
        "memory": memory.summary(),
        "errors": errors,
    }
    result.setdefault("connect_ingest", {})[f"{interval_s}s"] = entry
    print(f"  connect {interval_s}s: {entry['events_per_s']} events/s after start-up ({entry['startup_s']} s), "
          f"{records:,} in {entry['launch_to_last_commit_s']} s from launch; {entry['commits']} commits, "
          f"{entry['files']} files; commit latency {entry['commit_latency_s']}", flush=True)
    for line in errors:
        print("   ", line[:300], flush=True)


def steady(settings, rate: int, seconds: float) -> dict:
    from freshness import send_steady

    return send_steady(settings, rate, seconds, {}, threading.Event())


def part_fresh_spark(base, lake: PeerLake, trigger: int, rate: int, seconds: float, result: dict) -> None:
    from private_lake import drop_topic, private_topic

    settings = private_topic(base, f"peers-fresh-spark{trigger}", partitions=PARTITIONS)
    table = lake.create_bronze(f"spark_fresh_{trigger}s")
    spark = Spark(base, lake, "stream", settings.kafka_topic, table, trigger_seconds=trigger)
    memory = TreeMemory(0.5)
    try:
        spark.start()
        memory.root = spark.process.pid
        with memory:
            spark.wait_for("query_started", 600)
            time.sleep(5)
            print(f"[spark {trigger}s trigger] {rate} events/s for {seconds:.0f} s ...", flush=True)
            began = time.time()
            sent = steady(settings, rate, seconds)
            wait_for_records(lake.catalog, table, sent["events"], timeout=trigger * 2 + 120)
    finally:
        spark.stop()
        drop_topic(base, settings.kafka_topic)
    lat = table_latencies(lake.catalog, table)
    snaps = [s for s in table_snapshots(lake.catalog, table) if s["at"] >= began]
    entry = {"trigger_s": trigger, "sent": sent, "latency_s": percentiles(lat),
             "commits": len(snaps), "files": sum(s["added_files"] for s in snaps), "memory": memory.summary()}
    result.setdefault("freshness", {})[f"spark_{trigger}s"] = entry
    print(f"  spark {trigger}s: event → commit {entry['latency_s']}", flush=True)


def part_fresh_connect(base, lake: PeerLake, interval_s: int, rate: int, seconds: float, result: dict) -> None:
    """The Iceberg sink under the same steady traffic, once its worker has started and joined."""
    from private_lake import drop_topic, private_topic, unique
    from tasks.kafka import ensure_topic

    settings = private_topic(base, f"peers-fresh-connect{interval_s}", partitions=PARTITIONS)
    name = unique(f"peers-fresh-connect{interval_s}")
    control = f"{name}-control"
    ensure_topic(base, control, partitions=1)
    table = lake.create_bronze(f"connect_fresh_{interval_s}s")
    connect = Connect(base, name, settings.kafka_topic, table, control, interval_s * 1000)
    memory = TreeMemory(0.5)
    try:
        connect.start()
        memory.root = connect.process.pid
        with memory:
            deadline = time.monotonic() + 300
            while connect.started_at() is None and time.monotonic() < deadline:
                if connect.process.poll() is not None:
                    raise RuntimeError(f"Connect exited ({connect.process.returncode}): {connect.log()[-3000:]}")
                time.sleep(1)
            time.sleep(max(5, interval_s))  # the tasks join and the coordinator starts its first cycle
            print(f"[connect {interval_s}s commits] {rate} events/s for {seconds:.0f} s ...", flush=True)
            began = time.time()
            sent = steady(settings, rate, seconds)
            wait_for_records(lake.catalog, table, sent["events"], timeout=interval_s * 3 + 180)
        log = connect.log()
    finally:
        connect.stop()
        try:
            drop_topic(base, settings.kafka_topic)
            drop_topic(base, control)
            drop_groups_with_prefix(base, name)
        except Exception as exc:  # noqa: BLE001
            print(f"could not clean Connect's topics/groups: {exc}", file=sys.stderr)
    lat = table_latencies(lake.catalog, table)
    snaps = [s for s in table_snapshots(lake.catalog, table) if s["at"] >= began]
    entry = {"commit_interval_s": interval_s, "sent": sent, "latency_s": percentiles(lat),
             "commits": len(snaps), "files": sum(s["added_files"] for s in snaps),
             "commit_latency_s": percentiles([c["seconds"] for c in connect_commits(log) if c["initiated"] >= began]),
             "memory": memory.summary()}
    result.setdefault("freshness", {})[f"connect_{interval_s}s"] = entry
    print(f"  connect {interval_s}s: event → commit {entry['latency_s']}", flush=True)


def part_fresh_ours(base, commit_seconds: int, rate: int, seconds: float, result: dict) -> None:
    from freshness import Continuous, _retire_writers
    from private_lake import PrivateLake, drop_topic, private_topic
    from tasks.catalog import open_catalog
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table

    _retire_writers(base)
    own = PrivateLake(base, f"peers-fresh{commit_seconds}", layers=("bronze", "silver", "gold")).create()
    settings = private_topic(own.settings, f"peers-fresh-ours{commit_seconds}", partitions=PARTITIONS)
    runner = None
    try:
        catalog = open_catalog(settings, "admin")
        ensure_table(catalog, settings, BRONZE_CONVERSION_EVENTS_RAW)
        memory = TreeMemory(0.5, ray=True)
        runner = Continuous(settings, commit_seconds)
        with memory:  # the first sample, before the start, marks the Ray jobs already there
            time.sleep(1.5)
            runner.start()
            memory.root = runner.process.pid
            time.sleep(30)  # as benchmarks/freshness.py: steady state, not start-up
            print(f"[ours continuous {commit_seconds}s] {rate} events/s for {seconds:.0f} s ...", flush=True)
            began = time.time()
            sent = steady(settings, rate, seconds)
            wait_for_records(catalog, BRONZE_CONVERSION_EVENTS_RAW.identifier, sent["events"],
                             timeout=commit_seconds * 2 + 120)
        runner.stop()
        runner = None
        lat = table_latencies(catalog, BRONZE_CONVERSION_EVENTS_RAW.identifier)
        snaps = [s for s in table_snapshots(catalog, BRONZE_CONVERSION_EVENTS_RAW.identifier) if s["at"] >= began]
    finally:
        if runner is not None:
            runner.stop()
        drop_topic(settings, settings.kafka_topic)
        own.drop()
    entry = {"commit_seconds": commit_seconds, "sent": sent, "latency_s": percentiles(lat),
             "commits": len(snaps), "files": sum(s["added_files"] for s in snaps), "memory": memory.summary(),
             "note": "serve-continuous also promotes silver and gold in the same window (in its memory too)"}
    result.setdefault("freshness", {})[f"ours_{commit_seconds}s"] = entry
    print(f"  ours {commit_seconds}s: event → commit {entry['latency_s']}", flush=True)


def ours_inserted_ids(lake: Path) -> set[str]:
    """Event ids the promotion added to the lake's silver facts (history rows carry no bronze snapshot)."""
    from pyiceberg.expressions import NotNull

    from private_lake import file_lake
    from tasks.catalog import open_catalog
    from tasks.tables import SILVER_FACT_CONVERSIONS

    table = open_catalog(file_lake(lake), "silver").load_table(SILVER_FACT_CONVERSIONS.identifier)
    rows = table.scan(row_filter=NotNull("bronze_snapshot_id"), selected_fields=("event_id",)).to_arrow()
    return set(rows.column("event_id").to_pylist())


def part_silver(base, args, result: dict) -> None:
    """Our silver_flow and Spark's SQL promote the same bronze into the same silver history."""
    import pyarrow.parquet as pq

    import silver_promotion as sp
    from infra.services import prefect_env

    # the flow's child process reaches the stack's Prefect server with its credentials (environment only)
    os.environ.update({k: v for k, v in prefect_env(base).items() if k == "PREFECT_API_AUTH_STRING"})

    workdir = Path(args.silver_workdir)
    lake, setup = silver_setup(workdir, args.silver_history, args.silver_events, args.silver_days, args.silver_seed)
    events = setup["lake"]["bronze_records"]
    entry: dict = {
        "events": events, "history_records": setup["lake"]["history_records"],
        "history_facts": setup["lake"]["silver_facts"], "new_batch_kinds": setup["new_batch_kinds"],
        "storage": "one private file lakehouse for both (SQLite catalog, local file warehouse; "
                   "silver_promotion.py's setup), restored before each run; not the stack's REST catalog on S3",
        "ours": {},
    }
    ours_ids: set[str] = set()
    ours_report: dict = {}
    for runner in [r for r in args.silver_runners.split(",") if r]:
        sp.reset(lake)
        print(f"[ours silver, {runner}] promoting {events:,} records into {entry['history_facts']:,} facts ...", flush=True)
        run = sp.run_measured("_promote", ["--lake", str(lake), "--runner", runner], workdir, args.interval,
                              script=sp.__file__)
        summary = sp.promotion_summary(run, events)
        if not run.get("failed"):
            summary["startup_s (imports, before the flow)"] = run.get("startup_seconds")
            ours_ids = ours_inserted_ids(lake)
            ours_report = run["report"]
            summary["inserted_distinct_event_ids"] = len(ours_ids)
            m = summary["memory"]
            print(f"  flow {summary['flow_seconds']} s ({summary['records_per_s']:,} records/s), process "
                  f"{summary['process_seconds']} s; peak RSS process+workers "
                  f"{m['peak_process_plus_workers_mb (same instant)']} MB; facts {run['report'].get('facts')}, "
                  f"rejected {run['report'].get('rejected')}", flush=True)
        entry["ours"][runner] = summary
        sp.reset(lake)
    print(f"[spark silver] the same promotion in Spark SQL (local[{args.spark_cores}], "
          f"driver {args.spark_driver_memory}) ...", flush=True)
    spark = run_spark_silver(lake, workdir, args.interval, args.spark_cores, args.spark_driver_memory)
    if not spark.get("failed"):
        ids_path = spark.pop("_inserted_ids")
        spark_ids = set(pq.read_table(ids_path).column("event_id").to_pylist())
        shutil.rmtree(ids_path, ignore_errors=True)
        print(f"  start-up {spark['startup_s']} s; job {spark['seconds']} s ({spark['records_per_s']:,} records/s); "
              f"phases {spark['phases']}; peak RSS {spark['memory']['process_peak_rss_mb']} MB; "
              f"counts {spark['counts']}", flush=True)
        if ours_report:
            entry["compare"] = compare_outputs(ours_report, {**spark["counts"], "reasons": spark["reasons"]},
                                               ours_ids, spark_ids)
            print(f"  outputs: {entry['compare']}", flush=True)
    entry["spark"] = spark
    result["silver"] = entry


def summarize(result: dict) -> dict:
    """Ratios (>1: we are better) for the README table."""
    out: dict = {}
    ours, spark = result.get("ours_ingest"), result.get("spark_ingest")
    if ours and spark:
        out["ingest_rate_vs_spark"] = ratio(ours["events_per_s_in_flows"], spark["events_per_s"])
        out["ingest_rate_with_startup_vs_spark"] = ratio(ours["events_per_s"], spark["events_per_s_with_startup"])
    for key, entry in (result.get("connect_ingest") or {}).items():
        if ours:
            out[f"ingest_rate_vs_connect_{key}"] = ratio(ours["events_per_s_in_flows"], entry["events_per_s"])
            out[f"ingest_rate_with_startup_vs_connect_{key}"] = ratio(ours["events_per_s"],
                                                                       entry["events_per_s_with_startup"])
    silver = result.get("silver") or {}
    spark_silver = silver.get("spark") or {}
    for runner, run in (silver.get("ours") or {}).items():
        if run.get("failed") or spark_silver.get("failed") or not spark_silver:
            continue
        out[f"silver_rate_vs_spark_{runner}"] = ratio(run["records_per_s"], spark_silver["records_per_s"])
        out[f"silver_rate_with_startup_vs_spark_{runner}"] = ratio(
            silver["events"] / run["process_seconds"], spark_silver["records_per_s_with_startup"])
        out[f"silver_peak_memory_vs_spark_{runner}"] = ratio(
            run["memory"]["peak_process_plus_workers_mb (same instant)"],
            spark_silver["memory"]["process_peak_rss_mb"], False)
    fresh = result.get("freshness") or {}
    for trigger in (10, 60):
        o, s = fresh.get(f"ours_{trigger}s"), fresh.get(f"spark_{trigger}s")
        if o and s:
            out[f"freshness_p50_vs_spark_{trigger}s"] = ratio(o["latency_s"]["p50"], s["latency_s"]["p50"], False)
            out[f"freshness_p95_vs_spark_{trigger}s"] = ratio(o["latency_s"]["p95"], s["latency_s"]["p95"], False)
        c = fresh.get(f"connect_{trigger}s")
        if o and c:
            out[f"freshness_p50_vs_connect_{trigger}s"] = ratio(o["latency_s"]["p50"], c["latency_s"]["p50"], False)
            out[f"freshness_p95_vs_connect_{trigger}s"] = ratio(o["latency_s"]["p95"], c["latency_s"]["p95"], False)
    peak = "peak_tree_plus_workers_mb (same instant)"
    ours_mem = (ours or {}).get("memory", {}).get(peak)
    if ours_mem and (spark or {}).get("memory"):
        out["ingest_peak_memory_vs_spark"] = ratio(ours_mem, spark["memory"][peak], False)
    for key, entry in (result.get("connect_ingest") or {}).items():
        if ours_mem and entry.get("memory"):
            out[f"ingest_peak_memory_vs_connect_{key}"] = ratio(ours_mem, entry["memory"][peak], False)
    return out


def write(result: dict, target: Path = RESULT) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    clean["ratios"] = summarize(result)
    target.write_text(json.dumps(clean, indent=2, default=str) + "\n")
    print(f"wrote {target}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--parts", default="ingest,connect,freshness")
    parser.add_argument("--connect-intervals", default="10", help="commit intervals in seconds, e.g. 10,300")
    parser.add_argument("--fresh-rate", type=int, default=500)
    parser.add_argument("--fresh-seconds", type=float, default=90)
    parser.add_argument("--fresh-triggers", default="10,60")
    parser.add_argument("--fresh-connect-intervals", default="10", help="freshness: Connect commit intervals, s")
    parser.add_argument("--fresh-systems", default="spark,ours,connect", help="freshness: which systems to run")
    parser.add_argument("--silver-events", type=int, default=1_000_000, help="silver: new bronze records")
    parser.add_argument("--silver-history", type=int, default=5_000_000, help="silver: records behind the history")
    parser.add_argument("--silver-days", type=int, default=30)
    parser.add_argument("--silver-seed", type=int, default=11)
    parser.add_argument("--silver-workdir", default="/tmp/bench-peers-silver", help="silver: cached input lakehouse")
    parser.add_argument("--silver-runners", default="ray-cold,ray", help="silver: our runners (silver_promotion.py's)")
    parser.add_argument("--spark-cores", type=int, default=2)
    parser.add_argument("--spark-driver-memory", default="4g")
    parser.add_argument("--interval", type=float, default=0.5, help="/proc sampling period, seconds")
    parser.add_argument("--result", default=str(RESULT), help="the JSON to write (a smoke run: elsewhere)")
    parser.add_argument("--merge", action="store_true", help="keep the parts of an earlier peers.json not rerun")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # clean up on kill
    for path in (SPARK_PYTHON, CONNECT_JARS, CONNECT_PLUGINS):
        if not path.exists():
            raise SystemExit(f"{path.relative_to(ROOT)} is missing: run `make peers` first")

    from private_lake import clear_lakehouse_env, drop_topic
    from tasks.settings import load_settings

    base = load_settings().without_role_credentials()  # bench buckets: the single admin pair, as PrivateLake
    clear_lakehouse_env()
    parts = set(args.parts.split(","))
    fresh_systems = set(args.fresh_systems.split(","))
    target = Path(args.result)
    result: dict = json.loads(target.read_text()) if args.merge and target.exists() else {}
    result.pop("ratios", None)
    result.update({"benchmark": "peers", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "targets": TARGETS,
                   "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
                   "versions": {"spark": "4.0.0", "iceberg_spark_runtime": "1.10.1",
                                "iceberg_kafka_connect": "1.10.1", "connect_runtime": "4.1.1"}})
    if parts & {"ingest", "connect"}:
        result["events"] = args.events
    result.setdefault("runs", []).append({"at": result["at"], "parts": sorted(parts), "argv": sys.argv[1:]})
    lake = PeerLake(base)
    try:
        if parts & {"ingest", "connect"}:
            part_ingest(base, lake, args.events, result, args.interval)
            write(result, target)
        if "connect" in parts:
            topic = result["ingest_topic"]
            expected = sum(result["produce"]["per_partition"].values())
            for interval in [int(x) for x in args.connect_intervals.split(",") if x]:
                part_connect(base, lake, topic, expected, interval, result, args.interval)
                write(result, target)
        if "silver" in parts:
            part_silver(base, args, result)
            write(result, target)
        if "freshness" in parts:
            for trigger in [int(x) for x in args.fresh_triggers.split(",") if x]:
                if "spark" in fresh_systems:
                    part_fresh_spark(base, lake, trigger, args.fresh_rate, args.fresh_seconds, result)
                    write(result, target)
                if "ours" in fresh_systems:
                    part_fresh_ours(base, trigger, args.fresh_rate, args.fresh_seconds, result)
                    write(result, target)
            for interval in [int(x) for x in args.fresh_connect_intervals.split(",") if x]:
                if "connect" in fresh_systems:
                    part_fresh_connect(base, lake, interval, args.fresh_rate, args.fresh_seconds, result)
                    write(result, target)
    finally:
        cleanup = result.pop("_ingest_cleanup", None)
        if cleanup is not None:
            settings, own = cleanup
            drop_topic(settings, settings.kafka_topic)
            own.drop()
        lake.drop()
    write(result, target)


if __name__ == "__main__":
    main()
