"""Sending run events: the transport the settings choose, a spool for a backend that is down, and
the lakehouse's own copy in audit.lineage_events. Nothing here raises into a flow: a failure is
logged through the run logger and the events wait in the spool for the next emit."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple, Protocol, Sequence

from tasks.settings import S3Role, Settings


class Transport(Protocol):
    def emit(self, event: dict) -> object: ...


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
        from openlineage.client.serde import Serde

        refused: list = []
        producer = self._inner.producer
        producer.produce(topic=self._inner.topic, key=self._inner.message_key, value=Serde.to_json(event).encode("utf-8"),
                         on_delivery=lambda err, _msg: refused.append(err) if err is not None else None)
        if producer.flush(self._timeout):
            raise ConnectionError(f"Kafka did not take the event within {self._timeout}s")
        if refused:
            raise ConnectionError(f"Kafka refused the event: {refused[0].str()}")


def make_transport(settings: Settings) -> Transport | None:
    """The transport ``lineage_transport`` names; None for ``off``."""
    kind = settings.lineage_transport
    if kind == "off":
        return None
    if kind == "file":
        from openlineage.client.transport.file import FileConfig, FileTransport

        lineage_dir(settings).mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(lineage_dir(settings) / "events.jsonl"), append=True))
    if kind == "http":
        from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport, TokenProvider
        from openlineage.client.transport.http_common import DEFAULT_RETRY_CONFIG

        key = settings.lineage_api_key.get_secret_value() if settings.lineage_api_key else None
        return HttpTransport(HttpConfig(
            url=settings.lineage_url, timeout=settings.lineage_timeout_seconds,
            auth=ApiKeyTokenProvider({"api_key": key}) if key else TokenProvider({}),
            retry={**DEFAULT_RETRY_CONFIG, "total": 0, "connect": 0, "read": 0},  # the spool is the retry
        ))
    return _KafkaTransport(settings)


class Delivery(NamedTuple):
    sent: int  # events the transport took, spooled ones first
    spooled: int  # events waiting for the next emit


def spool_path(settings: Settings) -> Path:
    """The spool of this transport and destination: events kept for one backend are re-sent to
    that backend, never to another one a different run is configured with."""
    import hashlib

    destination = {"http": settings.lineage_url, "kafka": f"{settings.kafka_bootstrap}/{settings.lineage_kafka_topic}"}
    digest = hashlib.sha1(str(destination.get(settings.lineage_transport, "")).encode()).hexdigest()[:10]
    return lineage_dir(settings) / f"spool-{settings.lineage_transport}-{digest}.jsonl"


@contextmanager
def _spool_lock(settings: Settings) -> Iterator[Path]:
    """The spool file, held by this process only: concurrent flows neither resend nor drop each other's events."""
    spool = spool_path(settings)
    spool.parent.mkdir(parents=True, exist_ok=True)
    with open(spool.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield spool
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
    rest in the spool. Never raises."""
    logger = run_logger()
    if settings.lineage_transport == "off" and transport is None:
        return Delivery(0, 0)
    try:
        transport = transport or make_transport(settings)
        with _spool_lock(settings) as spool:
            backlog = _read_spool(spool) + list(events)
            for i, event in enumerate(backlog):
                try:
                    transport.emit(event)
                except Exception as exc:  # noqa: BLE001 - any backend failure is the same to a run
                    _write_spool(spool, backlog[i:])
                    logger.warning("lineage: the %s backend did not take an event (%s: %s); %d events spooled in %s "
                                   "for the next run", settings.lineage_transport, type(exc).__name__, exc,
                                   len(backlog) - i, spool)
                    return Delivery(i, len(backlog) - i)
            _write_spool(spool, [])
            return Delivery(len(backlog), 0)
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
