"""The one settings object of the lakehouse.

Read once at startup from ``LAKEHOUSE_*`` environment variables and an optional TOML file
(``--config`` or ``LAKEHOUSE_CONFIG``), validated, frozen, and passed down. Environment variables
win over the file, the file wins over the profile's defaults. A bad value raises
:class:`SettingsError`, which names the offending key; the CLI turns it into one line and exit 2.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "LAKEHOUSE_"
CONFIG_ENV = "LAKEHOUSE_CONFIG"
LAYERS = ("bronze", "silver", "gold")
# What the platform records about itself (data-quality results, lineage events): a namespace and
# bucket of its own beside the medallion layers, which verify and the layer roles reason about.
AUDIT = "audit"
NAMESPACES = (*LAYERS, AUDIT)
# The S3 roles of least privilege (infra/storage_roles.py grants each its buckets and actions);
# ADMIN_ROLE, the single pair, only provisions buckets and is the catalog server's.
ROLES = ("ingest", "silver", "gold", "serving", "maintenance")
ADMIN_ROLE = "admin"
ROLE_CREDENTIAL_FIELDS = tuple(f"s3_{r}_{half}" for r in ROLES for half in ("access_key_id", "secret_access_key"))
S3Role = Literal["ingest", "silver", "gold", "serving", "maintenance", "admin"]

Profile = Literal["embedded", "stack"]


class SettingsError(ValueError):
    """A configuration value is wrong; ``key`` is the environment variable a user would fix."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


def env_key(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def _check_url(value: str | None, key: str, schemes: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.scheme in ("file", "sqlite")):
        raise ValueError(f"malformed URL {value!r}: expected {' or '.join(s + '://' for s in schemes)}...")
    if parsed.scheme in ("http", "https"):
        try:
            parsed.port  # noqa: B018 - raises on a non-numeric port
        except ValueError as exc:
            raise ValueError(f"malformed URL {value!r}: {exc}") from None
        if not parsed.hostname:
            raise ValueError(f"malformed URL {value!r}: no host")
    return value


class Settings(BaseSettings):
    """Every knob of the platform. Field ``x`` is set by ``LAKEHOUSE_X`` or key ``x`` in the file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", case_sensitive=False
    )

    profile: Profile = Field("embedded", description="embedded (SQLite catalog, file warehouse, in-process Ray) or stack (REST catalog, S3, Ray head)")
    state_dir: Path = Field(Path(".lakehouse"), description="data, logs and pids of the local services and the embedded warehouse")

    # Catalog and storage
    catalog_name: str = Field("lakehouse", description="Iceberg catalog name")
    catalog_type: Literal["sql", "rest"] | None = Field(None, description="sql (SQLite) or rest; default by profile")
    catalog_uri: str | None = Field(None, description="sqlite:///... for sql, http(s)://... for rest; default by profile")
    warehouse: str | None = Field(None, description="file:///... or s3://; where each layer's bucket lives; default by profile")
    bucket_prefix: str = Field("lakehouse", description="layer buckets are <prefix>-bronze, -silver, -gold")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL; empty means AWS S3; default by profile")
    s3_region: str = Field("us-east-1", description="S3 region (always set; pyiceberg needs it)")
    s3_access_key_id: str | None = Field(None, description="S3 access key id")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key (never logged)")
    s3_path_style: bool = Field(True, description="path-style addressing (SeaweedFS, MinIO); false for AWS")
    # One S3 pair per role (least privilege); a role left unset signs with the single pair above
    # (AWS users may map roles to IAM there). `stack up` generates them for the local SeaweedFS.
    s3_ingest_access_key_id: str | None = Field(None, description="ingest's S3 key id: writes bronze")
    s3_ingest_secret_access_key: SecretStr | None = Field(None, description="ingest's S3 secret (never logged)")
    s3_silver_access_key_id: str | None = Field(None, description="silver's S3 key id: reads bronze, writes silver")
    s3_silver_secret_access_key: SecretStr | None = Field(None, description="silver's S3 secret (never logged)")
    s3_gold_access_key_id: str | None = Field(None, description="gold's S3 key id: reads silver, writes gold")
    s3_gold_secret_access_key: SecretStr | None = Field(None, description="gold's S3 secret (never logged)")
    s3_serving_access_key_id: str | None = Field(None, description="S3 key id of sql, notebooks, reports, verify: reads only")
    s3_serving_secret_access_key: SecretStr | None = Field(None, description="serving's S3 secret (never logged)")
    s3_maintenance_access_key_id: str | None = Field(None, description="maintenance's S3 key id: rewrites and deletes in every layer")
    s3_maintenance_secret_access_key: SecretStr | None = Field(None, description="maintenance's S3 secret (never logged)")
    catalog_token: SecretStr | None = Field(None, description="bearer token for the REST catalog; `stack up` generates one for the local catalog (never logged)")
    catalog_credential: SecretStr | None = Field(None, description="client_id:client_secret for a REST catalog's OAuth2 client-credentials flow (Polaris, Lakekeeper)")
    catalog_oauth2_server_uri: str | None = Field(None, description="token endpoint for catalog_credential; default: the catalog's own /v1/oauth/tokens")
    catalog_scope: str | None = Field(None, description="OAuth2 scope requested with catalog_credential (Polaris: PRINCIPAL_ROLE:ALL)")

    # Local stack
    stack_allow_remote_bind: bool = Field(False, description="let `stack up` bind services to a non-loopback host; off, it refuses and every socket must be on 127.0.0.1")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers host:port[,host:port]")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller port of the local broker")
    kafka_topic: str = Field("conversion-events", description="topic of the conversion events")
    kafka_partitions: int = Field(3, ge=1, le=1000, description="partitions when the topic is created")

    kafka_consumer_group: str = Field("lakehouse-bronze-ingest", description="group whose offsets are committed after each bronze commit, for lag monitoring only")

    # Ingest micro-batches: a batch ends at whichever limit comes first
    ingest_max_records: int = Field(1_000_000, ge=1, description="records per micro-batch, shared by the partitions in proportion to their lag")
    ingest_max_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="key+value bytes per micro-batch")
    ingest_max_seconds: float = Field(30.0, gt=0, description="seconds a micro-batch may spend reading")
    ingest_writers: int = Field(3, ge=1, le=256, description="warm Ray actors that read Kafka partitions and write bronze files in parallel")
    ingest_chunk_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="key+value bytes a writer actor reads before it writes them as files: bounds its memory, whatever the batch size")
    ingest_writer_idle_seconds: float = Field(900.0, ge=10, description="an ingest writer actor unused this long exits and frees its memory")

    # Continuous mode (flows/continuous.py): one long-lived process ingests and promotes warm
    pipeline_mode: Literal["scheduled", "continuous"] = Field("scheduled", description="'scheduled': the worker's once-a-minute ingest and event-triggered silver/gold runs; 'continuous': `lakehouse serve-continuous` (or the `continuous` deployment) commits bronze every few seconds and promotes silver and gold in the same warm process")
    continuous_commit_seconds: float = Field(5.0, gt=0, le=3600, description="continuous mode: a bronze commit at least this often while records arrive (the time bound)")
    continuous_max_records: int = Field(200_000, ge=1, description="continuous mode: a micro-batch ends at this many records (the size bound); a larger lag commits again at once")
    continuous_safety_seconds: float = Field(60.0, gt=0, description="continuous mode: a promotion at least this often even without a commit of its own (commits by other processes)")

    silver_max_value_bytes: int = Field(1024 * 1024, ge=1024, description="bronze values larger than this are quarantined as OVERSIZED")
    silver_max_batch_records: int = Field(500_000, ge=1, description="a silver promotion takes at most this many bronze records (whole bronze snapshots; one larger snapshot goes alone) and loops until caught up, so memory follows the bound, not the backlog")
    silver_max_batch_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024, description="a silver promotion takes at most this many bytes of bronze data files (whole bronze snapshots; one larger snapshot goes alone)")

    # Data quality (tasks/quality/): suites of expectations with a severity each, results in audit.dq_results
    dq_enabled: bool = Field(True, description="evaluate the expectation suites on every silver promotion and gold build")
    dq_suites_dir: Path | None = Field(None, description="folder of the suite files (<suite>.yml); empty: tasks/quality/suites in the repository")
    dq_severities: str = Field("", description="severity overrides, name=warn|quarantine|fail[,name=...]: e.g. latency_ms_in_range=quarantine")
    dq_volume_days: int = Field(7, ge=1, le=90, description="days of silver facts behind the batch_volume baseline (the trailing same-hour average)")

    # Lineage (tasks/lineage/): OpenLineage run events of every flow, and a copy in audit.lineage_events
    lineage_transport: Literal["off", "file", "http", "kafka"] = Field("file", description="where OpenLineage events go: file (<state_dir>/lineage/events.jsonl), http (lineage_url, e.g. Marquez), kafka (lineage_kafka_topic on kafka_bootstrap) or off; a backend that is down never fails a run: events are spooled in <state_dir>/lineage and re-sent; an event it refuses for good goes to a dead-letter file beside the spool")
    lineage_url: str | None = Field(None, description="http transport: the OpenLineage backend's base URL (events are POSTed to <url>/api/v1/lineage)")
    lineage_api_key: SecretStr | None = Field(None, description="http transport: API key sent as a bearer token (never logged)")
    lineage_kafka_topic: str = Field("openlineage-events", description="kafka transport: the topic the events are produced to")
    lineage_namespace: str = Field("lakehouse", description="OpenLineage job namespace of the flows")
    lineage_timeout_seconds: float = Field(2.0, gt=0, le=60, description="seconds one event may take to send before it is spooled")
    lineage_audit: bool = Field(True, description="also append every run's events to audit.lineage_events")
    lineage_file_max_bytes: int = Field(64 * 1024 * 1024, gt=0, description="file transport: once events.jsonl is larger than this, it is renamed events-<UTC time>.jsonl before the next append")
    lineage_file_keep: int = Field(5, ge=1, le=10_000, description="file transport: how many rotated events-<UTC time>.jsonl files are kept (the oldest beyond this are deleted)")

    # Prefect and Ray
    prefect_api_url: str = Field("http://127.0.0.1:4200/api", description="Prefect API URL")
    prefect_api_auth_string: SecretStr | None = Field(None, description="user:password of the Prefect server's basic auth; `stack up` generates one in the state folder's secrets (never logged)")
    ray_address: str | None = Field(None, description="'auto' joins the Ray head; empty runs Ray in-process; default by profile")
    ray_port: int = Field(6379, ge=1, le=54536, description="GCS port of the local Ray head; its other ports are the next 7, and its workers' ray_port+10000 to +10999")
    ray_object_store_mb: int = Field(2048, ge=78, description="object store cap of the Ray head, in MB (a promoted 1M-record batch is ~330 MB, held twice at a time)")
    daft_host_idle_seconds: float = Field(900.0, ge=10, description="the warm Daft host actor (silver's Daft jobs on a Ray cluster) unused this long exits and frees its memory")
    ray_auth_mode: Literal["token", "disabled"] = Field("token", description="RAY_AUTH_MODE for the head and every client")

    # Compute: how Daft spreads a job's work over the Ray cluster
    compute_partitions: int = Field(1, ge=1, le=4096, description="partitions silver's dedup, validation and SCD2 and gold's aggregates run over, hashed by event_id, user_id or the group keys, so Ray spreads them over nodes and cores; 1 keeps a batch in one in-memory partition (no shuffle), best on one small node; the result is the same for every value")

    # Maintenance (flows/maintenance, tasks/maintenance): compaction, snapshot expiry, orphan removal
    maintenance_target_file_bytes: int = Field(128 * 1024 * 1024, ge=1024, description="compaction packs small data files into files of at most this many bytes")
    maintenance_small_file_bytes: int = Field(96 * 1024 * 1024, ge=1, description="data files smaller than this are compacted; at most maintenance_target_file_bytes")
    maintenance_min_input_files: int = Field(2, ge=2, description="a partition is compacted only if it has at least this many small files")
    maintenance_freshness_hours: float = Field(24.0, ge=0, description="partitions with a data file committed within this many hours are not compacted (streaming appends)")
    maintenance_retention_bronze_days: float = Field(30.0, ge=0, description="bronze snapshots older than this many days are expired")
    maintenance_retention_silver_days: float = Field(7.0, ge=0, description="silver snapshots older than this many days are expired")
    maintenance_retention_gold_days: float = Field(3.0, ge=0, description="gold snapshots older than this many days are expired")
    maintenance_retention_audit_days: float = Field(30.0, ge=0, description="audit snapshots (audit.dq_results, audit.lineage_events) older than this many days are expired; their rows stay")
    maintenance_keep_last_snapshots: int = Field(5, ge=1, description="the newest this many snapshots of a table are never expired")
    maintenance_orphan_age_hours: float = Field(72.0, ge=1, description="unreferenced files under a table's location are deleted only when older than this many hours")
    maintenance_commit_attempts: int = Field(5, ge=1, le=100, description="compaction and expiry re-plan and retry this many times when a concurrent commit wins")

    @field_validator("dq_severities")
    @classmethod
    def _dq_severities(cls, v: str) -> str:
        _parse_severities(v)
        return v

    @field_validator("maintenance_small_file_bytes")
    @classmethod
    def _small_file_bytes(cls, v: int, info: Any) -> int:
        target = info.data.get("maintenance_target_file_bytes")
        if target is not None and v > target:
            raise ValueError(f"{v} exceeds maintenance_target_file_bytes ({target})")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The loader passes the file's values as init kwargs; the environment must override them.
        return (env_settings, init_settings)

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k.lower(): v for k, v in data.items()}
        profile = data.get("profile") or "embedded"
        if profile not in ("embedded", "stack"):
            return data  # the Literal reports it, naming the key
        state = Path(data.get("state_dir") or ".lakehouse").expanduser().absolute()
        data["state_dir"] = state
        defaults: dict[str, Any]
        if profile == "embedded":
            defaults = {
                "catalog_type": "sql",
                "catalog_uri": f"sqlite:///{state / 'catalog.db'}",
                "warehouse": (state / "warehouse").as_uri(),
                "ray_address": "",
            }
        else:
            defaults = {
                "catalog_type": "rest",
                "catalog_uri": "http://127.0.0.1:8181",
                "warehouse": "s3://",
                "s3_endpoint": "http://127.0.0.1:8333",
                "ray_address": "auto",
            }
        for key, value in defaults.items():
            if data.get(key) in (None, ""):
                data[key] = value
        return data

    @field_validator("catalog_uri")
    @classmethod
    def _catalog_uri(cls, v: str | None) -> str | None:
        return _check_url(v, "catalog_uri", ("sqlite", "http", "https", "postgresql"))

    @field_validator("s3_endpoint")
    @classmethod
    def _s3_endpoint(cls, v: str | None) -> str | None:
        return _check_url(v or None, "s3_endpoint", ("http", "https"))

    @field_validator("lineage_url")
    @classmethod
    def _lineage_url(cls, v: str | None) -> str | None:
        return _check_url(v or None, "lineage_url", ("http", "https"))

    @field_validator("prefect_api_url")
    @classmethod
    def _prefect_url(cls, v: str) -> str:
        return _check_url(v, "prefect_api_url", ("http", "https"))  # type: ignore[return-value]

    @field_validator("warehouse")
    @classmethod
    def _warehouse(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = urlparse(v).scheme
        if scheme not in ("file", "s3"):
            raise ValueError(f"malformed URL {v!r}: expected file:///path or s3://")
        return v.rstrip("/") if scheme == "file" else "s3://"

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        for server in v.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"malformed address {server!r}: expected host:port")
        return v

    @field_validator("bucket_prefix", "catalog_name", "kafka_topic", "kafka_consumer_group", "lineage_kafka_topic",
                     "lineage_namespace")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"{v!r} must be non-empty and use only letters, digits, '-', '_', '.'")
        return v

    @field_validator(*ROLE_CREDENTIAL_FIELDS, mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if v == "" else v  # LAKEHOUSE_S3_<ROLE>_...="" unsets a generated pair

    @model_validator(mode="after")
    def _role_pairs(self) -> "Settings":
        for role in ROLES:
            key_id, secret = f"s3_{role}_access_key_id", f"s3_{role}_secret_access_key"
            has_secret = getattr(self, secret) is not None and bool(getattr(self, secret).get_secret_value())
            if getattr(self, key_id) and not has_secret:
                raise ValueError(f"missing: {secret} is required when {key_id} is set")
            if has_secret and not getattr(self, key_id):
                raise ValueError(f"missing: {key_id} is required when {secret} is set")
        return self

    @model_validator(mode="after")
    def _no_wildcard_hosts(self) -> "Settings":
        """0.0.0.0 and :: mean "every interface": for a local service that trusts whoever
        reaches it, that is an opening, so it takes the explicit opt-in."""
        if self.stack_allow_remote_bind:
            return self
        hosts = {
            "catalog_uri": urlparse(self.catalog_uri or "").hostname,
            "s3_endpoint": urlparse(self.s3_endpoint or "").hostname,
            "prefect_api_url": urlparse(self.prefect_api_url).hostname,
            "kafka_bootstrap": next((s.strip().rpartition(":")[0].strip("[]") for s in self.kafka_bootstrap.split(",")
                                     if s.strip().rpartition(":")[0].strip("[]") in ("0.0.0.0", "::")), None),
        }
        for key, host in hosts.items():
            if host in ("0.0.0.0", "::"):
                raise ValueError(f"invalid: {key} uses the wildcard address {host}, which listens on every "
                                 "interface; use 127.0.0.1, or set stack_allow_remote_bind=true to mean it")
        return self

    @model_validator(mode="after")
    def _lineage_backend(self) -> "Settings":
        if self.lineage_transport == "http" and not self.lineage_url:
            raise ValueError("missing: lineage_url is required when lineage_transport is http")
        return self

    @model_validator(mode="after")
    def _secrets_present(self) -> "Settings":
        if self.uses_s3:
            if not self.s3_access_key_id:
                raise ValueError("missing: s3_access_key_id is required when the warehouse is on S3 "
                                 "(`lakehouse stack up` generates the local stack's)")
            if self.s3_secret_access_key is None or not self.s3_secret_access_key.get_secret_value():
                raise ValueError("missing: s3_secret_access_key is required when the warehouse is on S3 "
                                 "(`lakehouse stack up` generates the local stack's)")
        if self.catalog_type == "sql" and not (self.catalog_uri or "").startswith(("sqlite", "postgresql")):
            raise ValueError("invalid: catalog_uri must be sqlite:///... when catalog_type is sql")
        if self.catalog_type == "rest" and not (self.catalog_uri or "").startswith("http"):
            raise ValueError("invalid: catalog_uri must be http(s)://... when catalog_type is rest")
        return self

    # ---- derived values -------------------------------------------------------------------

    @property
    def dq_severity_overrides(self) -> dict[str, str]:
        """``dq_severities`` as expectation name -> severity."""
        return _parse_severities(self.dq_severities)

    @property
    def catalog_tag(self) -> str:
        """Names this lakehouse among others on one Prefect server or Ray cluster (a test's private
        catalog beside the stack's): the catalog's name and a hash of its URI."""
        import hashlib

        return f"{self.catalog_name}-{hashlib.sha256((self.catalog_uri or '').encode()).hexdigest()[:8]}"

    @property
    def uses_s3(self) -> bool:
        return (self.warehouse or "").startswith("s3://")

    def s3_credentials(self, role: S3Role) -> tuple[str, str]:
        """The (access key id, secret) ``role`` signs S3 requests with: its own pair, else the single
        pair; ``admin`` is always the single pair. Empty strings when no pair is set."""
        if role != ADMIN_ROLE and role not in ROLES:
            raise ValueError(f"unknown S3 role {role!r}; expected one of {(*ROLES, ADMIN_ROLE)}")
        if role in ROLES:
            key_id, secret = getattr(self, f"s3_{role}_access_key_id"), getattr(self, f"s3_{role}_secret_access_key")
            if key_id and secret is not None:
                return key_id, secret.get_secret_value()
        return self.s3_access_key_id or "", self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else ""

    def without_role_credentials(self) -> "Settings":
        """These settings with every role on the single pair: for a private lakehouse in buckets of
        its own (tests, benchmarks), which the per-role identities do not cover."""
        return self.model_copy(update=dict.fromkeys(ROLE_CREDENTIAL_FIELDS))

    def bucket(self, layer: str) -> str:
        """The bucket of a layer or of the audit namespace."""
        if layer not in NAMESPACES:
            raise ValueError(f"unknown layer {layer!r}; expected one of {NAMESPACES}")
        return f"{self.bucket_prefix}-{layer}"

    def layer_location(self, layer: str) -> str:
        """Where a layer's namespace lives: its own bucket on S3, or a folder of that name."""
        if self.uses_s3:
            return f"s3://{self.bucket(layer)}/{layer}"
        return f"{self.warehouse}/{self.bucket(layer)}/{layer}"

    def as_env(self) -> dict[str, str]:
        """Every setting as LAKEHOUSE_* variables, secrets included: for child processes only
        (the Prefect worker and the flow runs it starts), never for logs."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None:
                out[env_key(name)] = str(value).lower() if isinstance(value, bool) else str(value)
            elif name in ROLE_CREDENTIAL_FIELDS:
                out[env_key(name)] = ""  # unset there too, over the state folder's generated pairs
        return out

    def redacted(self) -> dict[str, str]:
        """Every setting as its environment variable, with secrets masked; safe to log."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else ""
            out[env_key(name)] = "" if value is None else str(value)
        return out


def _parse_severities(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, severity = (s.strip() for s in item.partition("="))
        if not sep or not name or severity not in ("warn", "quarantine", "fail"):
            raise ValueError(f"{item!r}: expected name=warn|quarantine|fail")
        out[name] = severity
    return out


def _field_from_loc(loc: tuple[Any, ...], message: str) -> str:
    if loc:
        return str(loc[0])
    # model-level checks put the field name after "missing:" / "invalid:"
    for word in message.replace(",", " ").split():
        if word in Settings.model_fields:
            return word
    return "config"


def _generated_secrets(file_values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """What ``stack up`` generated into the state folder's secrets (tasks/stack_secrets.py): the
    lowest layer, under the file, the environment and explicit overrides."""
    from tasks.stack_secrets import read_values

    given = {k.lower(): v for k, v in {**file_values, **overrides}.items()}
    # the environment wins over the file and explicit values, as for every setting
    state = os.environ.get(env_key("state_dir")) or given.get("state_dir") or ".lakehouse"
    try:
        generated = read_values(Path(state).expanduser().absolute())
    except ValueError as exc:
        raise SettingsError(env_key("state_dir"), str(exc)) from None
    return {k: v for k, v in generated.items() if k in Settings.model_fields}


def state_dir_of(config_file: Path | str | None = None) -> Path:
    """The state folder the settings will name, without validating anything else: where ``stack
    up`` must generate the secrets that the settings then read."""
    path = config_file or os.environ.get(CONFIG_ENV) or None
    file_state = None
    if path:
        try:
            values = tomllib.loads(Path(path).read_text())
            file_state = values.get("lakehouse", values).get("state_dir")
        except (OSError, tomllib.TOMLDecodeError):
            pass  # load_settings reports it, naming the key
    state = os.environ.get(env_key("state_dir")) or file_state or ".lakehouse"
    return Path(state).expanduser().absolute()


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the Settings from a TOML file, the environment and explicit overrides.

    Raises SettingsError naming the key of the first bad value.
    """
    path = config_file or os.environ.get(CONFIG_ENV) or None
    file_values: dict[str, Any] = {}
    if path:
        path = Path(path)
        try:
            file_values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SettingsError(CONFIG_ENV, f"config file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(CONFIG_ENV, f"config file {str(path)!r} is not valid TOML: {exc}") from None
        file_values = file_values.get("lakehouse", file_values)
        unknown = sorted(set(k.lower() for k in file_values) - set(Settings.model_fields))
        if unknown:
            raise SettingsError(f"{path}:{unknown[0]}", "unknown setting")
    values = {**_generated_secrets(file_values, overrides), **file_values, **overrides}
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        field = _field_from_loc(tuple(err.get("loc") or ()), msg)
        if err.get("type") == "literal_error" and "input" in err:
            msg = f"{err['input']!r} is not allowed; {msg.lower()}"
        raise SettingsError(env_key(field) if field in Settings.model_fields else field, msg) from None
