"""Sending run events: the transport the settings choose, a spool for a backend that is down, and
the lakehouse's own copy in audit.lineage_events. Nothing here raises into a flow: a failure is
logged through the run logger and the events wait in the spool for the next emit, except an event
the backend refuses for what it is (too large, malformed), which would block the spool forever: it
goes to a dead-letter file beside the spool, with the reason. The file transport's events.jsonl is
rotated by size."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Protocol, Sequence

from tasks.settings import S3Role, Settings


class Transport(Protocol):
    def emit(self, event: dict) -> object: ...


class RefusedEvent(Exception):
    """The backend refused this one event for good (HTTP 400, 413, 422...; Kafka: too large,
    invalid record): sending it again would be refused again, so it is dead-lettered instead of
    blocking every later event in the spool."""


# HTTP 4xx that are not about the event: try again later (408, 425, 429), or a sender or address
# every event would get (401, 403, 404, 405, 407): fixing the key or URL delivers the spool.
_HTTP_TRANSIENT = frozenset({408, 425, 429})
_HTTP_NOT_THE_EVENT = frozenset({401, 403, 404, 405, 407})


def http_refusal_is_permanent(status: int) -> bool:
    """Whether an HTTP status refuses the event itself (resending cannot succeed)."""
    return 400 <= status < 500 and status not in _HTTP_TRANSIENT | _HTTP_NOT_THE_EVENT


def kafka_refusal_is_permanent(error) -> bool:
    """Whether a Kafka error (a ``KafkaError``) refuses the record itself. By code: delivery reports
    never set ``retriable()`` (a broker that is down reports _MSG_TIMED_OUT with retriable() False),
    so a not-retriable error is not enough; a fatal one is the producer's, not the record's."""
    from confluent_kafka import KafkaError

    if error.retriable() or error.fatal():
        return False
    return error.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD)


def lineage_dir(settings: Settings) -> Path:
    return settings.state_dir / "lineage"


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task; this module's logger outside one."""
    if "prefect" not in sys.modules:  # not imported: no run to log to (and no slow import for nothing)
        return logging.getLogger(__name__)
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


class _KafkaTransport:
    """openlineage's Kafka transport (its producer, key and serialization), flushed with a bound: its
    own flush would wait forever for a broker that is down, and a message that is not delivered in
    time is an error (and spooled). So is one the broker refused (its callback only logs that, and
    the event would count as sent)."""

    def __init__(self, settings: Settings):
        from openlineage.client.transport.kafka import KafkaConfig, KafkaTransport

        self._timeout = settings.lineage_timeout_seconds
        self._inner = KafkaTransport(KafkaConfig(
            config={"bootstrap.servers": settings.kafka_bootstrap, "message.timeout.ms": str(int(self._timeout * 1000))},
            topic=settings.lineage_kafka_topic, messageKey="lakehouse", flush=False))

    def emit(self, event: dict) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from openlineage.client.serde import Serde

        refused: list = []
        producer = self._inner.producer
        try:
            producer.produce(topic=self._inner.topic, key=self._inner.message_key,
                             value=Serde.to_json(event).encode("utf-8"),
                             on_delivery=lambda err, _msg: refused.append(err) if err is not None else None)
        except KafkaException as exc:  # e.g. larger than the producer's message.max.bytes
            if not exc.args or not isinstance(exc.args[0], KafkaError):
                raise
            refused.append(exc.args[0])
        else:
            if producer.flush(self._timeout):
                raise ConnectionError(f"Kafka did not take the event within {self._timeout}s")
        if refused:
            reason = f"Kafka refused the event: {refused[0].name()}: {refused[0].str()}"
            raise RefusedEvent(reason) if kafka_refusal_is_permanent(refused[0]) else ConnectionError(reason)


class _HttpTransport:
    """openlineage's HTTP transport, whose 4xx answers (``requests.HTTPError``) that refuse the
    event itself become ``RefusedEvent``; the reason names the status and the backend's answer,
    never the URL (it may carry credentials)."""

    def __init__(self, inner):
        self._inner = inner

    def emit(self, event: dict) -> object:
        from requests import HTTPError

        try:
            return self._inner.emit(event)
        except HTTPError as exc:
            response = exc.response
            if response is None or not http_refusal_is_permanent(response.status_code):
                raise
            body = " ".join((response.text or "").split())[:200]
            raise RefusedEvent(f"HTTP {response.status_code} {response.reason}" + (f": {body}" if body else "")) from None


class _FileTransport:
    """openlineage's file transport on ``events.jsonl``, rotated by size under a lock of its own:
    past ``max_bytes`` the file is renamed ``events-<UTC time>.jsonl`` before the next append, and
    only the newest ``keep`` of those stay."""

    def __init__(self, path: Path, max_bytes: int, keep: int):
        from openlineage.client.transport.file import FileConfig, FileTransport

        self.path, self._max_bytes, self._keep = path, max_bytes, keep
        self._inner = FileTransport(FileConfig(log_file_path=str(path), append=True))

    def emit(self, event: dict) -> None:
        with _locked(self.path.with_name(self.path.name + ".lock")):
            rotate_events(self.path, self._max_bytes, self._keep, datetime.now(timezone.utc))
            self._inner.emit(event)


EVENTS_FILE = "events.jsonl"


def rotated_name(now: datetime) -> str:
    """The name ``events.jsonl`` takes when rotated at ``now`` (UTC): names sort by time."""
    return f"events-{now.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}.jsonl"


def expired_rotations(names: Iterable[str], keep: int) -> list[str]:
    """The rotated files beyond the newest ``keep`` (oldest first)."""
    rotated = sorted(n for n in names if n.startswith("events-") and n.endswith(".jsonl"))
    return rotated[:max(len(rotated) - keep, 0)]


def rotate_events(path: Path, max_bytes: int, keep: int, now: datetime) -> Path | None:
    """Rename ``path`` with a UTC time suffix once it exceeds ``max_bytes`` and delete the rotated
    files beyond the newest ``keep``; the new name, None if it was not due. The caller holds the lock."""
    try:
        if path.stat().st_size <= max_bytes:
            return None
    except FileNotFoundError:
        return None
    while (target := path.with_name(rotated_name(now))).exists():  # two rotations in one microsecond
        now += timedelta(microseconds=1)
    os.replace(path, target)
    for name in expired_rotations((p.name for p in path.parent.iterdir()), keep):
        (path.parent / name).unlink(missing_ok=True)
    run_logger().info("lineage: %s rotated to %s (over %d bytes); keeping the newest %d", path.name, target.name,
                      max_bytes, keep)
    return target


def make_transport(settings: Settings) -> Transport | None:
    """The transport ``lineage_transport`` names; None for ``off``."""
    kind = settings.lineage_transport
    if kind == "off":
        return None
    if kind == "file":
        lineage_dir(settings).mkdir(parents=True, exist_ok=True)
        return _FileTransport(lineage_dir(settings) / EVENTS_FILE, settings.lineage_file_max_bytes,
                              settings.lineage_file_keep)
    if kind == "http":
        from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport, TokenProvider
        from openlineage.client.transport.http_common import DEFAULT_RETRY_CONFIG

        key = settings.lineage_api_key.get_secret_value() if settings.lineage_api_key else None
        return _HttpTransport(HttpTransport(HttpConfig(
            url=settings.lineage_url, timeout=settings.lineage_timeout_seconds,
            auth=ApiKeyTokenProvider({"api_key": key}) if key else TokenProvider({}),
            retry={**DEFAULT_RETRY_CONFIG, "total": 0, "connect": 0, "read": 0},  # the spool is the retry
        )))
    return _KafkaTransport(settings)


class Delivery(NamedTuple):
    sent: int  # events the transport took, spooled ones first
    spooled: int  # events waiting for the next emit
    dead: int = 0  # events the backend refused for good, now in the dead-letter file


def _destination(settings: Settings) -> str:
    """``<transport>-<hash of the destination>``: names the spool and dead-letter files of one backend."""
    import hashlib

    destination = {"http": settings.lineage_url, "kafka": f"{settings.kafka_bootstrap}/{settings.lineage_kafka_topic}"}
    digest = hashlib.sha1(str(destination.get(settings.lineage_transport, "")).encode()).hexdigest()[:10]
    return f"{settings.lineage_transport}-{digest}"


def spool_path(settings: Settings) -> Path:
    """The spool of this transport and destination: events kept for one backend are re-sent to
    that backend, never to another one a different run is configured with."""
    return lineage_dir(settings) / f"spool-{_destination(settings)}.jsonl"


def dead_letter_path(settings: Settings) -> Path:
    """Beside the spool: the events this backend refused for good, one JSON line each with the
    event, the reason and when (``{"event", "reason", "dead_lettered_at"}``)."""
    return lineage_dir(settings) / f"dead-{_destination(settings)}.jsonl"


def dead_letter(event: dict, reason: str, now: datetime) -> dict:
    """The dead-letter line of ``event``."""
    return {"event": event, "reason": reason, "dead_lettered_at": now.astimezone(timezone.utc).isoformat()}


def dead_letters(settings: Settings) -> list[dict]:
    """The dead-lettered events of the configured backend (torn lines skipped)."""
    return _read_spool(dead_letter_path(settings))


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on ``lock_path`` across processes, for the length of the block."""
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _spool_lock(settings: Settings) -> Iterator[Path]:
    """The spool file, held by this process only: concurrent flows neither resend nor drop each other's events."""
    spool = spool_path(settings)
    spool.parent.mkdir(parents=True, exist_ok=True)
    with _locked(spool.with_suffix(".lock")):
        yield spool


def _write_spool(path: Path, events: Sequence[dict]) -> None:
    if not events:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
    os.replace(tmp, path)


def _read_spool(path: Path) -> list[dict]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a torn line of a crashed writer: nothing to resend
    return events


def deliver(settings: Settings, events: Sequence[dict], transport: Transport | None = None) -> Delivery:
    """Send what the spool holds, then ``events``, in order; from the first failure on, keep the
    rest in the spool. An event the backend refuses for good (``RefusedEvent``) goes to the
    dead-letter file, logged once, and the rest goes on. Never raises."""
    logger = run_logger()
    if settings.lineage_transport == "off" and transport is None:
        return Delivery(0, 0)
    try:
        transport = transport or make_transport(settings)
        with _spool_lock(settings) as spool:
            backlog = _read_spool(spool) + list(events)
            sent = dead = 0
            for i, event in enumerate(backlog):
                try:
                    transport.emit(event)
                    sent += 1
                except RefusedEvent as exc:  # on disk before the spool is rewritten: at worst twice, never lost
                    path, line = dead_letter_path(settings), dead_letter(event, str(exc), datetime.now(timezone.utc))
                    with open(path, "a") as out:
                        out.write(json.dumps(line, sort_keys=True) + "\n")
                    dead += 1
                    logger.warning("lineage: the %s backend refused an event for good (%s); moved to %s",
                                   settings.lineage_transport, exc, path)
                except Exception as exc:  # noqa: BLE001 - any other backend failure is the same to a run
                    _write_spool(spool, backlog[i:])
                    logger.warning("lineage: the %s backend did not take an event (%s: %s); %d events spooled in %s "
                                   "for the next run", settings.lineage_transport, type(exc).__name__, exc,
                                   len(backlog) - i, spool)
                    return Delivery(sent, len(backlog) - i, dead)
            _write_spool(spool, [])
            return Delivery(sent, 0, dead)
    except Exception as exc:  # noqa: BLE001 - the spool itself failed (disk): the run still goes on
        logger.warning("lineage: events not sent nor spooled (%s: %s)", type(exc).__name__, exc)
        return Delivery(0, 0)


def append_audit(settings: Settings, role: S3Role, events: Sequence[dict], attempts: int = 3) -> int | None:
    """Append ``events`` to audit.lineage_events in one commit (re-tried when a concurrent run's
    commit wins); returns the snapshot id, None if it could not. Never raises."""
    import pyarrow as pa

    from tasks.catalog import open_catalog
    from tasks.lineage.events import audit_row
    from tasks.tables import AUDIT_LINEAGE_EVENTS, ensure_table

    if not settings.lineage_audit or not events:
        return None
    logger = run_logger()
    try:
        table = ensure_table(open_catalog(settings, role), settings, AUDIT_LINEAGE_EVENTS)
        rows = pa.Table.from_pylist([audit_row(e) for e in events], schema=table.schema().as_arrow())
        for attempt in range(attempts):
            try:
                table.append(rows)
                return table.current_snapshot().snapshot_id
            except Exception:  # noqa: BLE001
                if attempt == attempts - 1:
                    raise
                table = table.refresh()
    except Exception as exc:  # noqa: BLE001
        logger.warning("lineage: %d events not appended to %s (%s: %s)", len(events),
                       AUDIT_LINEAGE_EVENTS.identifier, type(exc).__name__, exc)
    return None
