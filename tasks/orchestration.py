"""What every flow shares with Prefect: commit events, per-table locks, retry rules, artifacts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import Any, Iterator, Mapping

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.settings import Settings

COMMITTED_EVENT = "lakehouse.table.committed"
RETRY_DELAYS = [2, 10, 30]


def table_resource(identifier: str) -> str:
    return f"lakehouse.table.{identifier}"


def lock_name(identifier: str, settings: Settings) -> str:
    """The global concurrency limit guarding writes to one table of one catalog (created by
    `lakehouse deploy`). Qualified by the catalog, so two lakehouses on one Prefect server (a test's
    private catalog beside the stack's) never wait on each other."""
    return f"table:{identifier}@{settings.catalog_tag}"


@contextlib.contextmanager
def table_lock(settings: Settings, *identifiers: str) -> Iterator[None]:
    """Hold the tables' global concurrency slots while committing, so two writers never race.

    Several tables are taken in one request: the server grants all or none, so no deadlock.
    Without `lakehouse deploy` the limits do not exist and this does not block: the commit's own
    optimistic check still refuses a stale writer.
    """
    from prefect.concurrency.sync import concurrency

    # The shortest lease the server takes: a writer killed mid-commit frees its slot within a minute.
    with concurrency([lock_name(i, settings) for i in identifiers], occupy=1, strict=False, timeout_seconds=600,
                     lease_duration=60):
        yield


def is_transient(exc: BaseException | None) -> bool:
    """Faults worth a retry: broker or store unreachable, S3 5xx, a catalog commit conflict.
    Bad data never raises, it is quarantined, so it is never retried."""
    if exc is None:
        return False
    from confluent_kafka import KafkaException
    from pyiceberg.exceptions import CommitFailedException

    if isinstance(exc, (KafkaException, CommitFailedException, ConnectionError, TimeoutError, socket.timeout)):
        return True
    try:
        from botocore.exceptions import ClientError, EndpointConnectionError

        if isinstance(exc, EndpointConnectionError):
            return True
        if isinstance(exc, ClientError):
            return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, OSError):  # connection refused/reset, S3 over HTTP from pyarrow and Daft
        return True
    text = str(exc).lower()
    return any(word in text for word in ("connection refused", "timed out", "503", "502", "500 internal",
                                         "broker transport failure", "all brokers are down"))


def retry_transient(task_, task_run, state) -> bool:
    """Prefect retry_condition_fn: retry only transient faults."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the state's own exception
        return is_transient(exc)
    return False


# Options of every task that touches the network: no caching, backoff on transient faults only.
TRANSIENT_RETRY = dict(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=RETRY_DELAYS,
                       retry_condition_fn=retry_transient)


def crash_if(point: str, crash_at: str | None) -> None:
    """Test affordance of the exactly-once tests: SIGKILL this very process at a named point."""
    if crash_at == point:
        os.kill(os.getpid(), signal.SIGKILL)


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def emit_table_committed(
    identifier: str,
    layer: str,
    snapshot_id: int,
    run_id: str,
    rows_written: int,
    rows_rejected: int = 0,
    upstream_snapshot_id: int | None = None,
) -> None:
    """Announce a commit; the next layer's deployment trigger listens for it."""
    from prefect.events import emit_event

    emit_event(
        event=COMMITTED_EVENT,
        resource={"prefect.resource.id": table_resource(identifier), "lakehouse.layer": layer},
        payload={
            "table": identifier,
            "snapshot_id": snapshot_id,
            "rows_written": rows_written,
            "rows_rejected": rows_rejected,
            "upstream_snapshot_id": upstream_snapshot_id,
            "run_id": run_id,
        },
    )


def publish_counts(key: str, counts: Mapping[str, Any], description: str) -> None:
    """A table artifact of a run's counts, visible on the flow run in the Prefect UI."""
    from prefect.artifacts import create_table_artifact

    rows = [{"measure": k, "value": v if isinstance(v, (int, float, str)) else str(v)} for k, v in counts.items()]
    create_table_artifact(key=key, table=rows, description=description)
