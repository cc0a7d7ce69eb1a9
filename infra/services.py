"""The five native services of the local stack: how to build, start, check and provision each.

Every service listens on 127.0.0.1 only. Ports and credentials come from Settings, so the same
values work with ``infra/docker-compose.yml``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from tasks.settings import Settings, env_key

INFRA = Path(__file__).resolve().parent
LOOPBACK_LAUNCHER = INFRA / "iceberg-rest" / "LoopbackRESTCatalogServer.java"
JAVA_OPTS = ["-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]

Reporter = Callable[[str], None]


class BuildError(RuntimeError):
    """A download or build step failed; the message says which and where its log is."""


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run_logged(command: list[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None, what: str = "") -> None:
    """Run a build step, its output in ``log``; raise BuildError naming the log on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        result = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise BuildError(f"{what or command[0]} failed (exit {result.returncode}); see {log}: " + " | ".join(tail))


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Service:
    """One native service. Subclasses fill in the hooks."""

    name = ""

    def __init__(self, settings: Settings):
        self.settings = settings

    # -- layout in the state folder --------------------------------------------------------
    @property
    def state(self) -> Path:
        return self.settings.state_dir

    @property
    def data_dir(self) -> Path:
        return self.state / "data" / self.name

    @property
    def log_path(self) -> Path:
        return self.state / "logs" / f"{self.name}.log"

    @property
    def build_log(self) -> Path:
        return self.state / "logs" / f"{self.name}-build.log"

    @property
    def pid_path(self) -> Path:
        return self.state / "run" / f"{self.name}.pid"

    # -- hooks -------------------------------------------------------------------------------
    def address(self) -> str:
        raise NotImplementedError

    def ports(self) -> dict[int, str]:
        """Every port the service listens on, with the settings key that chooses it."""
        raise NotImplementedError

    def is_built(self) -> bool:
        return True

    def build(self, report: Reporter) -> None:
        """Download or build what the service needs; cached across runs."""

    def initialise(self) -> None:
        """One-time set-up before the first start (formatting storage, writing config)."""

    def launch(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def check_health(self) -> str | None:
        """None when healthy, else what is wrong. A protocol-level check, not an open port."""
        raise NotImplementedError

    def provision(self) -> list[str]:
        """Idempotent post-start set-up (topics, buckets, namespaces); returns what it created."""
        return []

    def recover(self, started: datetime) -> list[str]:
        """After a fresh start at ``started``, repair what a stopped instance left behind;
        returns what it did."""
        return []

    def settings_fingerprint(self) -> str:
        """Changes when the settings this service was started with change; '' if none matter."""
        return ""

    # -- shared helpers ----------------------------------------------------------------------
    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
        return env


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    return parsed.hostname or "127.0.0.1", parsed.port or 80


MAVEN_DEPENDENCY_PLUGIN = "3.8.1"  # the version both poms pin


def _maven_copy(pom: Path, lib: Path, log: Path, what: str) -> None:
    """Resolve the pom's runtime jars from Maven Central into ``lib``, once per pom content."""
    marker = lib / ".pom-fingerprint"
    if marker.exists() and marker.read_text() == _fingerprint(pom):
        return
    if shutil.which("mvn") is None:
        raise BuildError(f"{what}: Maven (mvn) is not installed; install it (apt-get install maven)")
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    run_logged(
        # the plugin by its full coordinates: a `dependency:` prefix needs the plugin group's
        # metadata from Central, and one failed fetch of it is cached and fails every later build
        ["mvn", "-B", "-q", "-U", "-f", str(pom), f"org.apache.maven.plugins:maven-dependency-plugin:{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
         f"-DoutputDirectory={lib}", "-DincludeScope=runtime"],
        log,
        what=f"{what} download (Maven)",
    )
    marker.write_text(_fingerprint(pom))


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BuildError("java is not installed; Kafka and the Iceberg REST catalog need Java 17+")
    return java


# ---------------------------------------------------------------------------------------------
class SeaweedFS(Service):
    """S3 API from SeaweedFS ``weed mini``, built from the Go module proxy."""

    name = "seaweedfs"

    @property
    def binary(self) -> Path:
        return self.state / "bin" / "weed"

    def address(self) -> str:
        host, port = _host_port(self.settings.s3_endpoint or "")
        return f"{host}:{port}"

    def ports(self) -> dict[int, str]:
        _, port = _host_port(self.settings.s3_endpoint or "")
        return {port: env_key("s3_endpoint")}

    def is_built(self) -> bool:
        marker = self.binary.with_suffix(".fingerprint")
        return self.binary.exists() and marker.exists() and marker.read_text() == self._fingerprint()

    def _fingerprint(self) -> str:
        return _fingerprint(INFRA / "seaweedfs" / "go.mod", INFRA / "seaweedfs" / "go.sum")

    def build(self, report: Reporter) -> None:
        if self.is_built():
            return
        if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
            raise BuildError("seaweedfs: Go is not installed; it is built with the go toolchain")
        go = shutil.which("go") or "/usr/local/go/bin/go"
        report("building SeaweedFS from the Go module proxy (first run only, a few minutes)")
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        run_logged(
            [go, "build", "-p", "2", "-trimpath", "-ldflags=-s -w", "-o", str(self.binary),
             "github.com/seaweedfs/seaweedfs/weed"],
            self.build_log,
            cwd=INFRA / "seaweedfs",
            env={k: v for k, v in os.environ.items() if not k.startswith("WEED_")},
            what="SeaweedFS build",
        )
        self.binary.with_suffix(".fingerprint").write_text(self._fingerprint())

    def _identities(self) -> Path:
        """The S3 identities file: the admin pair and one least-privilege identity per role
        (infra/storage_roles.py says who may read, write and delete where)."""
        from infra.storage_roles import seaweedfs_identities

        config = seaweedfs_identities(self.settings)
        path = self.state / "run" / "seaweedfs-s3.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # secrets: owner-only from the first byte, not chmod-ed after being written
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file may have other modes
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(config, indent=2))
        return path

    def launch(self) -> tuple[list[str], dict[str, str]]:
        host, port = _host_port(self.settings.s3_endpoint or "")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [str(self.binary), *SEAWEEDFS_ARGS(host, port, self.data_dir, self._identities())]
        # weed reads filer.toml/security.toml from its working directory: run it in its data dir.
        # WEED_* variables would override the filer store; GOMEMLIMIT keeps the GC within budget.
        # AWS_* keys in the environment would become one more admin identity.
        env = {k: v for k, v in self.base_env().items() if not k.startswith(("WEED_", "AWS_"))}
        env["GOMEMLIMIT"] = "512MiB"
        env.update(seaweedfs_security_env(self.settings))
        return command, env

    def settings_fingerprint(self) -> str:
        # new signing keys or identities need a restart
        return _digest(seaweedfs_security_env(self.settings), self._identities().read_text())

    def check_health(self) -> str | None:
        from tasks.catalog import s3_client

        try:
            s3_client(self.settings, "admin").list_buckets()
            return None
        except Exception as exc:  # noqa: BLE001 - reported as the problem
            return f"S3 ListBuckets failed: {type(exc).__name__}: {str(exc)[:120]}"

    def provision(self) -> list[str]:
        from tasks.catalog import ensure_buckets

        return [f"bucket {b}" for b in ensure_buckets(self.settings)]


def seaweedfs_security_env(settings: Settings) -> dict[str, str]:
    """security.toml as WEED_* variables (a set variable wins over the file): JWT signing keys
    for the volume server (writes and reads) and the filer (writes and reads), so only the S3
    gateway, which signs with them, reaches object bytes; the filer's directory listing and the
    volume UI are off, and only the S3 endpoint's own origin passes CORS. Keys come from the
    state folder's secrets (tasks/stack_secrets.py); none before the first ``stack up``."""
    from tasks.stack_secrets import seaweedfs_keys

    keys = seaweedfs_keys(settings.state_dir)
    if not keys:
        return {}
    return {
        "WEED_JWT_SIGNING_KEY": keys["volume_write"],
        "WEED_JWT_SIGNING_READ_KEY": keys["volume_read"],
        "WEED_JWT_FILER_SIGNING_KEY": keys["filer_write"],
        "WEED_JWT_FILER_SIGNING_READ_KEY": keys["filer_read"],
        "WEED_FILER_EXPOSE_DIRECTORY_METADATA_ENABLED": "false",
        "WEED_ACCESS_UI": "false",
        "WEED_CORS_ALLOWED_ORIGINS_VALUES": (settings.s3_endpoint or "").rstrip("/"),
    }


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def SEAWEEDFS_ARGS(host: str, port: int, data_dir: Path, identities: Path) -> list[str]:  # noqa: N802
    """The ``weed mini`` command line: every HTTP port pinned (defaults silently move when taken),
    and the extras that would clash or phone home switched off: Iceberg (8181, our catalog's
    port), Lance, WebDAV, the admin UI and telemetry."""
    return [
        "mini",
        f"-dir={data_dir}",
        f"-ip={host}",
        f"-ip.bind={host}",
        "-master.port=9333",
        "-volume.port=9340",
        "-filer.port=8888",
        f"-s3.port={port}",
        f"-s3.config={identities}",
        "-s3.iam=false",  # no IAM API on the S3 port: identities come from the config file only
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-admin.port.legacy=0",
        "-master.telemetry=false",
    ]


# ---------------------------------------------------------------------------------------------
class Kafka(Service):
    """A single combined KRaft broker and controller, from Maven Central jars."""

    name = "kafka"

    @property
    def lib(self) -> Path:
        return self.state / "lib" / "kafka"

    def address(self) -> str:
        return self.settings.kafka_bootstrap.split(",")[0]

    def ports(self) -> dict[int, str]:
        _, port = _host_port(self.address())
        return {port: env_key("kafka_bootstrap"), self.settings.kafka_controller_port: env_key("kafka_controller_port")}

    def is_built(self) -> bool:
        marker = self.lib / ".pom-fingerprint"
        return marker.exists() and marker.read_text() == _fingerprint(INFRA / "kafka" / "pom.xml")

    def build(self, report: Reporter) -> None:
        if not self.is_built():
            report("downloading Kafka jars from Maven Central (first run only)")
            _maven_copy(INFRA / "kafka" / "pom.xml", self.lib, self.build_log, "Kafka")

    @property
    def properties_path(self) -> Path:
        return self.state / "run" / "kafka-server.properties"

    def _write_properties(self) -> None:
        host, port = _host_port(self.address())
        template = (INFRA / "kafka" / "server.properties").read_text()
        text = template.format(
            host=host,
            port=port,
            controller_port=self.settings.kafka_controller_port,
            log_dirs=self.data_dir,
            partitions=self.settings.kafka_partitions,
        )
        self.properties_path.parent.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(text)

    def initialise(self) -> None:
        self._write_properties()
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = _kafka_cluster_id()
        run_logged(
            [_java(), "-Xmx128m", *JAVA_OPTS, *self._logging_flags(), "-cp", f"{self.lib}/*",
             "kafka.tools.StorageTool", "format", "--standalone",
             # one token: a random id may start with '-'
             f"--cluster-id={cluster_id}", "-c", str(self.properties_path)],
            self.build_log,
            what="Kafka storage format",
        )

    def launch(self) -> tuple[list[str], dict[str, str]]:
        command = [
            _java(), "-Xms128m", "-Xmx512m", *JAVA_OPTS, *self._logging_flags(),
            "-cp", f"{self.lib}/*", "kafka.Kafka", str(self.properties_path),
        ]
        return command, self.base_env()

    def _logging_flags(self) -> list[str]:
        return [
            f"-Dlog4j2.configurationFile={INFRA / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.state / 'logs' / 'kafka'}",
        ]

    def check_health(self) -> str | None:
        from confluent_kafka.admin import AdminClient

        try:
            # log_level 0: a broker that is still starting must not flood the terminal
            admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap, "socket.timeout.ms": 2000,
                                 "log_level": 0})
            metadata = admin.list_topics(timeout=3)
            return None if metadata.brokers else "no broker in cluster metadata"
        except Exception as exc:  # noqa: BLE001
            return f"metadata request failed: {str(exc)[:120]}"

    def provision(self) -> list[str]:
        from tasks.kafka import ensure_topic

        return [f"topic {t}" for t in ensure_topic(self.settings)]


def _kafka_cluster_id() -> str:
    """A random base64url UUID, the format ``kafka-storage random-uuid`` prints."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


# ---------------------------------------------------------------------------------------------
class IcebergRest(Service):
    """Apache Iceberg's REST catalog server (the iceberg-rest-fixture), JDBC on SQLite, S3FileIO."""

    name = "iceberg-rest"

    @property
    def lib(self) -> Path:
        return self.state / "lib" / "iceberg-rest"

    def address(self) -> str:
        host, port = _host_port(self.settings.catalog_uri or "")
        return f"{host}:{port}"

    def ports(self) -> dict[int, str]:
        _, port = _host_port(self.settings.catalog_uri or "")
        return {port: env_key("catalog_uri")}

    @property
    def launcher_dir(self) -> Path:
        return self.state / "lib" / "iceberg-rest-launcher"

    def is_built(self) -> bool:
        marker = self.lib / ".pom-fingerprint"
        launcher = self.launcher_dir / ".fingerprint"
        return (
            marker.exists()
            and marker.read_text() == _fingerprint(INFRA / "iceberg-rest" / "pom.xml")
            and launcher.exists()
            and launcher.read_text() == _fingerprint(LOOPBACK_LAUNCHER)
        )

    def build(self, report: Reporter) -> None:
        if self.is_built():
            return
        report("downloading the Iceberg REST catalog from Maven Central (first run only)")
        _maven_copy(INFRA / "iceberg-rest" / "pom.xml", self.lib, self.build_log, "Iceberg REST catalog")
        # The stock server binds 0.0.0.0; this small launcher binds loopback only.
        javac = str(Path(_java()).with_name("javac"))
        if self.launcher_dir.exists():
            shutil.rmtree(self.launcher_dir)
        self.launcher_dir.mkdir(parents=True)
        run_logged([javac, "-cp", f"{self.lib}/*", "-d", str(self.launcher_dir), str(LOOPBACK_LAUNCHER)],
                   self.build_log, what="Iceberg REST launcher compile")
        (self.launcher_dir / ".fingerprint").write_text(_fingerprint(LOOPBACK_LAUNCHER))

    def launch(self) -> tuple[list[str], dict[str, str]]:
        return iceberg_rest_launch(self.settings, self.data_dir, self.lib, self.launcher_dir, base_env=self.base_env())

    def settings_fingerprint(self) -> str:
        # its bearer token and the S3 pair it writes metadata with
        token = self.settings.catalog_token
        return _digest("bearer", token.get_secret_value() if token else "", self.settings.s3_credentials("admin"))

    def check_health(self) -> str | None:
        try:
            status, body = http_get(f"{self.settings.catalog_uri}/v1/config", headers=catalog_auth_header(self.settings))
        except OSError as exc:
            return f"GET /v1/config failed: {exc}"
        if status != 200:
            return f"GET /v1/config answered HTTP {status}"
        try:
            json.loads(body)
        except ValueError:
            return "GET /v1/config did not answer JSON"
        return None

    def provision(self) -> list[str]:
        from tasks.catalog import ensure_namespaces, open_catalog

        return [f"namespace {n}" for n in ensure_namespaces(open_catalog(self.settings, "admin"), self.settings)]


def iceberg_rest_launch(settings: Settings, data_dir: Path, lib: Path, launcher_dir: Path, max_heap_mb: int = 384,
                        base_env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Command and environment of one Iceberg REST catalog server (``IcebergRest.launch`` is this
    for the stack's instance; a test starts a private one on another port and folder with it).

    It listens on ``settings.catalog_uri``'s host and port, keeps its JDBC catalog in the SQLite
    file ``data_dir/catalog.db`` (created here if missing), writes through S3FileIO to
    ``settings.s3_endpoint`` with its warehouse in ``settings.bucket('bronze')``, and runs the
    jars in ``lib`` and the compiled launcher in ``launcher_dir`` (``IcebergRest.build``) with a
    heap of at most ``max_heap_mb`` MB. ``base_env``: the environment to extend (default: this
    process's, without LAKEHOUSE_* variables, as ``Service.base_env``)."""
    s = settings
    if base_env is None:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    host, port = _host_port(s.catalog_uri or "")
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else ""
    env = {
        **base_env,
        "CATALOG_REST_HOST": host,
        "CATALOG_REST_PORT": str(port),
        # One SQLite connection with a busy timeout: parallel commits queue instead of failing.
        "CATALOG_URI": f"jdbc:sqlite:file:{data_dir / 'catalog.db'}?busy_timeout=10000",
        "CATALOG_CLIENTS": "1",
        "CATALOG_JDBC_USER": "lakehouse",
        "CATALOG_JDBC_PASSWORD": "lakehouse",
        "CATALOG_WAREHOUSE": f"s3://{s.bucket('bronze')}/warehouse",
        "CATALOG_IO__IMPL": "org.apache.iceberg.aws.s3.S3FileIO",
        "CATALOG_S3_ENDPOINT": s.s3_endpoint or "",
        "CATALOG_S3_PATH__STYLE__ACCESS": str(s.s3_path_style).lower(),
        "CATALOG_CLIENT_REGION": s.s3_region,
        # Keys only as AWS_* variables: the server logs every CATALOG_* property at start.
        "AWS_REGION": s.s3_region,
        "AWS_ACCESS_KEY_ID": s.s3_access_key_id or "",
        "AWS_SECRET_ACCESS_KEY": secret,
        # LoopbackRESTCatalogServer answers 401 to any request without this bearer token
        "REST_CATALOG_BEARER_TOKEN": s.catalog_token.get_secret_value() if s.catalog_token else "",
    }
    command = [_java(), "-Xms64m", f"-Xmx{max_heap_mb}m", *JAVA_OPTS,
               "-cp", f"{launcher_dir}:{lib}/*", "LoopbackRESTCatalogServer"]
    return command, env


def catalog_auth_header(settings: Settings) -> dict[str, str]:
    token = settings.catalog_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token and token.get_secret_value() else {}


# ---------------------------------------------------------------------------------------------
class PrefectServer(Service):
    """``prefect server start`` with its home (SQLite database) inside the state folder."""

    name = "prefect"

    def address(self) -> str:
        host, port = _host_port(self.settings.prefect_api_url)
        return f"{host}:{port}"

    def ports(self) -> dict[int, str]:
        _, port = _host_port(self.settings.prefect_api_url)
        return {port: env_key("prefect_api_url")}

    def launch(self) -> tuple[list[str], dict[str, str]]:
        host, port = _host_port(self.settings.prefect_api_url)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **self.base_env(),
            **prefect_env(self.settings),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.settings.prefect_api_url,
            # a web page of another origin may not call the API from a browser on this machine
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": f"http://{host}:{port}",
        }
        auth = self.settings.prefect_api_auth_string
        if auth is not None and auth.get_secret_value():
            # the UI asks for it at login and sends it as a header: no ambient browser credential
            env["PREFECT_SERVER_API_AUTH_STRING"] = auth.get_secret_value()
        prefect = str(Path(sys.executable).with_name("prefect"))
        return [prefect, "server", "start", "--host", host, "--port", str(port), "--analytics-off"], env

    def settings_fingerprint(self) -> str:
        auth = self.settings.prefect_api_auth_string
        return _digest("basic", auth.get_secret_value() if auth else "")

    def check_health(self) -> str | None:
        try:
            status, body = http_get(f"{self.settings.prefect_api_url}/health", headers=prefect_auth_header(self.settings))
        except OSError as exc:
            return f"GET /api/health failed: {exc}"
        return None if status == 200 and body.strip() == b"true" else f"GET /api/health answered {status} {body[:60]!r}"


class PrefectWorker(Service):
    """A process worker on the ``lakehouse`` pool: it runs the deployments' flows as subprocesses,
    with every setting passed down as LAKEHOUSE_* variables."""

    name = "prefect-worker"
    pool = "lakehouse"

    def address(self) -> str:
        return f"pool {self.pool}"

    def ports(self) -> dict[int, str]:
        return {}

    def launch(self) -> tuple[list[str], dict[str, str]]:
        env = {**self.base_env(), **self.settings.as_env(), **prefect_env(self.settings),
               **ray_env(self.settings), "LAKEHOUSE_PROJECT_DIR": str(INFRA.parent),
               # the runs it starts send heartbeats; `lakehouse deploy` crashes the ones that stop
               "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
        prefect = str(Path(sys.executable).with_name("prefect"))
        return [prefect, "worker", "start", "--pool", self.pool, "--type", "process", "--limit", "4",
                "--name", f"lakehouse-{os.uname().nodename}"], env

    def recover(self, started: datetime) -> list[str]:
        from infra.flow_runs import crash_orphaned_runs

        auth = self.settings.prefect_api_auth_string
        crashed = crash_orphaned_runs(self.settings.prefect_api_url, self.pool, started,
                                      auth.get_secret_value() if auth is not None else None)
        return [f"crashed {len(crashed)} orphaned run(s) of the stopped worker: {', '.join(crashed)}"] if crashed else []

    def settings_fingerprint(self) -> str:
        # The flows it runs read their settings from its environment: a new profile needs a new worker.
        return settings_env_fingerprint(self.settings)

    def check_health(self) -> str | None:
        try:
            workers = prefect_post(self.settings, f"/work_pools/{self.pool}/workers/filter", {})
        except (OSError, ValueError) as exc:
            return f"cannot list the pool's workers: {exc}"
        if any(w.get("status") == "ONLINE" for w in workers):
            return None
        return "no ONLINE worker on the pool yet"


class ContinuousPipeline(Service):
    """Continuous mode (``pipeline_mode = "continuous"``): `lakehouse serve-continuous`, one
    long-lived process whose ingest commits every few seconds and whose silver and gold runs stay
    warm (flows/continuous.py). Healthy while its long-running flow run is Running."""

    name = "continuous"

    def address(self) -> str:
        return "flow continuous-pipeline"

    def ports(self) -> dict[int, str]:
        return {}

    def launch(self) -> tuple[list[str], dict[str, str]]:
        env = {**self.base_env(), **self.settings.as_env(), **prefect_env(self.settings), **ray_env(self.settings),
               "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
        return [sys.executable, "-m", "flows.cli", "serve-continuous"], env

    def settings_fingerprint(self) -> str:
        return settings_env_fingerprint(self.settings)

    def check_health(self) -> str | None:
        body = {"flows": {"name": {"any_": ["continuous-pipeline"]}},
                "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}, "limit": 1}
        try:
            runs = prefect_post(self.settings, "/flow_runs/filter", body)
        except (OSError, ValueError) as exc:
            return f"cannot list flow runs: {exc}"
        return None if runs else "no continuous-pipeline flow run is Running yet"


def settings_env_fingerprint(settings: Settings) -> str:
    """Changes with any setting: a process that reads them all from its environment (the worker,
    the continuous pipeline) must restart when one changes."""
    return hashlib.sha256(json.dumps(settings.as_env(), sort_keys=True).encode()).hexdigest()[:16]


def prefect_post(settings: Settings, path: str, body: dict):
    """POST ``body`` to the Prefect API (with its basic auth) and return the decoded answer: the
    health checks use this rather than a client, to stay cheap. Raises OSError or ValueError."""
    request = urllib.request.Request(
        f"{settings.prefect_api_url}{path}", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **prefect_auth_header(settings)}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=3) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def prefect_env(settings: Settings) -> dict[str, str]:
    """Environment every Prefect client and the server share: where the API is and, when the
    server has basic auth, the client's credential for it (never logged: child processes only)."""
    env = {
        "PREFECT_HOME": str(settings.state_dir / "data" / "prefect"),
        "PREFECT_API_URL": settings.prefect_api_url,
    }
    auth = settings.prefect_api_auth_string
    if auth is not None and auth.get_secret_value():
        env["PREFECT_API_AUTH_STRING"] = auth.get_secret_value()
    return env


def prefect_client(settings: Settings):
    """An async Prefect client of the configured server with its basic-auth credential. Prefect's
    ``get_client`` reads the credential from the environment once, at import; this does not."""
    from prefect.client.orchestration import PrefectClient

    auth = settings.prefect_api_auth_string
    return PrefectClient(api=settings.prefect_api_url, auth_string=auth.get_secret_value() if auth else None)


def prefect_auth_header(settings: Settings) -> dict[str, str]:
    """The Authorization header Prefect's own client sends for the basic-auth string."""
    import base64

    auth = settings.prefect_api_auth_string
    if auth is None or not auth.get_secret_value():
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.get_secret_value().encode()).decode()}


# ---------------------------------------------------------------------------------------------
class RayHead(Service):
    """``ray start --head --block`` with a capped object store, no dashboard, token auth, and
    every socket on loopback at a pinned port (see ``ray_ports``)."""

    name = "ray"

    def address(self) -> str:
        return f"127.0.0.1:{self.settings.ray_port}"

    def ports(self) -> dict[int, str]:
        ports = {port: env_key("ray_port") for port in ray_ports(self.settings).values()}
        low, high = ray_worker_ports(self.settings)
        ports.update({port: env_key("ray_port") for port in range(low, high + 1)})
        return ports

    def initialise(self) -> None:
        # the token's old home, readable by anyone who could list the run folder before it was 0700
        (self.state / "run" / "ray-auth-token").unlink(missing_ok=True)

    def launch(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        ray = str(Path(sys.executable).with_name("ray"))
        ports = ray_ports(s)
        low, high = ray_worker_ports(s)
        command = [
            ray, "start", "--head", "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={s.ray_port}",
            *(f"--{flag}={port}" for flag, port in ports.items() if flag != "port"),
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
            f"--object-store-memory={s.ray_object_store_mb * 1024 * 1024}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--num-cpus=2",
        ]
        env = {
            **self.base_env(),
            **ray_env(s),
            "RAY_USAGE_STATS_ENABLED": "0",
            # Keep warm workers between micro-batches: by default the head keeps only num_cpus
            # idle workers and kills them after 1 s, so every batch paid a cold worker start.
            "RAY_num_workers_soft_limit": "8",
            "RAY_idle_worker_killing_time_threshold_ms": "300000",
        }
        return command, env

    def settings_fingerprint(self) -> str:
        return _digest(self.launch()[0], ray_env(self.settings))

    def check_health(self) -> str | None:
        ray = str(Path(sys.executable).with_name("ray"))
        try:
            result = subprocess.run(
                [ray, "health-check", f"--address=127.0.0.1:{self.settings.ray_port}"],
                env={**self.base_env(), **ray_env(self.settings)},
                capture_output=True,
                text=True,
                timeout=20,
            )
        except subprocess.TimeoutExpired:
            return "GCS health check timed out after 20s"
        if result.returncode == 0:
            return None
        return "GCS health check failed: " + (result.stderr.strip().splitlines() or ["no output"])[-1][:120]


def ray_ports(settings: Settings) -> dict[str, int]:
    """Every fixed port of the Ray head, by its ``ray start`` flag: the GCS at ``ray_port`` and
    the rest just above it. Unpinned, Ray picks random ports, which a socket audit can't tell
    from a stranger's."""
    base = settings.ray_port
    flags = ("port", "node-manager-port", "object-manager-port", "ray-client-server-port",
             "dashboard-agent-grpc-port", "dashboard-agent-listen-port", "runtime-env-agent-port",
             "metrics-export-port")
    return {flag: base + i for i, flag in enumerate(flags)}


def ray_worker_ports(settings: Settings) -> tuple[int, int]:
    """The range every Ray worker's gRPC port comes from: ray_port+10000 to ray_port+10999 (with
    the default 16379-17378, clear of every other stack port). Each worker and actor holds one,
    and a test session keeps dozens of warm actors alive at a time."""
    return settings.ray_port + 10_000, settings.ray_port + 10_999


def ray_env(settings: Settings) -> dict[str, str]:
    """Ray's environment for the head and every client, in both profiles: the same auth mode and
    token file, every socket on loopback, and the session folders inside the state folder."""
    from tasks.compute import ray_client_env

    return ray_client_env(settings, create=True)


def all_services(settings: Settings) -> list[Service]:
    """In start order: storage before the catalog that writes to it, the server before its worker.

    The embedded profile keeps its catalog, warehouse and Ray in-process, so it needs only Kafka
    and Prefect."""
    if settings.profile == "embedded":
        kinds: tuple[type[Service], ...] = (Kafka, PrefectServer, PrefectWorker)
    else:
        kinds = (SeaweedFS, Kafka, IcebergRest, PrefectServer, RayHead, PrefectWorker)
    if settings.pipeline_mode == "continuous":
        kinds = (*kinds, ContinuousPipeline)
    return [cls(settings) for cls in kinds]
