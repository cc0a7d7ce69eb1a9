"""What every flow shares with Prefect: commit events, per-table locks, retry rules, artifacts."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import socket
import time
from typing import Any, Callable, Iterator, Mapping, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.settings import Settings

COMMITTED_EVENT = "lakehouse.table.committed"
RETRY_DELAYS = [2, 10, 30]
T = TypeVar("T")


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


# errno values of a network that is down or a peer that went away: worth a retry. Every other
# OSError (a missing file, no permission, a full disk) needs a person, not a retry.
_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                     errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE, errno.EAGAIN}
# What S3 over HTTP, the REST catalog and librdkafka say when a service is briefly unavailable;
# read only from exceptions that carry no structured cause (Arrow's and Daft's OSError texts).
_TRANSIENT_WORDS = ("connection refused", "connection reset", "timed out", "timeout", "503", "502", "504",
                    "500 internal", "internal server error", "service unavailable", "slow down", "slowdown",
                    "throttl", "broker transport failure", "all brokers are down", "temporarily unavailable")


def is_transient(exc: BaseException | None) -> bool:
    """Faults worth retrying as they are: a broker, store or catalog briefly unreachable, S3 5xx
    or throttling. Never bad data (it is quarantined, not raised), a missing file, a full disk, a
    programming error, or a commit conflict: a conflict means the run's plan is stale, so the flow
    re-plans (``replan_on_conflict``) rather than re-applying the same commit."""
    if exc is None:
        return False
    cause = getattr(exc, "cause", None)  # a Ray actor's error (RayTaskError) carries the original
    if isinstance(cause, BaseException) and cause is not exc:
        return is_transient(cause)
    from confluent_kafka import KafkaError, KafkaException
    from pyiceberg.exceptions import ServerError, ServiceUnavailableError, TooManyRequestsError

    from tasks.commits import StaleCommitError

    if isinstance(exc, (StaleCommitError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                        ValueError, TypeError, KeyError, AttributeError, AssertionError, NotImplementedError)):
        return False
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        return isinstance(error, KafkaError) and (error.retriable() or error.code() in (
            KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._RESOLVE,
            KafkaError.REQUEST_TIMED_OUT, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            # a restarted broker has not re-elected its partitions' leaders yet (librdkafka does not
            # mark these retriable when they come back from a watermark-offsets request)
            KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE))
    if isinstance(exc, (ServerError, ServiceUnavailableError, TooManyRequestsError, ConnectionError, TimeoutError,
                        socket.timeout)):
        return True
    try:
        from daft.exceptions import DaftTransientError

        if isinstance(exc, DaftTransientError):
            return True
    except ImportError:  # pragma: no cover
        pass
    try:
        import requests
        from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError

        if isinstance(exc, (requests.ConnectionError, requests.Timeout, BotoConnectionError)):
            return True
        if isinstance(exc, ClientError):
            response = exc.response or {}
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            code = str(response.get("Error", {}).get("Code", ""))
            return status >= 500 or status == 429 or code in ("SlowDown", "Throttling", "RequestTimeout")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in _TRANSIENT_ERRNOS
    if isinstance(exc, (OSError, RuntimeError)):
        text = str(exc).lower()
        return any(word in text for word in _TRANSIENT_WORDS)
    return False


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


REPLAN_ATTEMPTS = 4
REPLAN_DELAYS = [1, 3, 9]


def replan_on_conflict(run: Callable[[], T], what: str, logger, attempts: int = REPLAN_ATTEMPTS) -> T:
    """``run`` plans from the tables and commits; when another run committed first (a
    ``StaleCommitError``: nothing of this attempt was committed), wait and run it again, which
    plans from the new state. After ``attempts`` the conflict is raised."""
    from tasks.commits import StaleCommitError

    for attempt in range(1, attempts + 1):
        try:
            return run()
        except StaleCommitError as exc:
            if attempt == attempts:
                raise
            delay = REPLAN_DELAYS[min(attempt, len(REPLAN_DELAYS)) - 1] * random.uniform(0.8, 1.2)
            logger.warning("%s: %s; planning again in %.1f s (attempt %d of %d)", what, exc, delay, attempt + 1,
                           attempts)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def crash_if(point: str, crash_at: str | None) -> None:
    """Test affordance of the exactly-once tests: SIGKILL this very process at a named point."""
    if crash_at == point:
        os.kill(os.getpid(), signal.SIGKILL)


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def emit_table_committed(
    settings: Settings,
    identifier: str,
    layer: str,
    snapshot_id: int,
    run_id: str,
    rows_written: int,
    rows_rejected: int = 0,
    upstream_snapshot_id: int | None = None,
) -> None:
    """Announce a commit; the next layer's deployment trigger listens for it. The resource names
    the catalog (``lakehouse.catalog``), and `lakehouse deploy` makes the triggers match only their
    own catalog's commits: a test's or benchmark's private lakehouse never triggers the stack's."""
    from prefect.events import emit_event

    emit_event(
        event=COMMITTED_EVENT,
        resource={"prefect.resource.id": table_resource(identifier), "lakehouse.layer": layer,
                  "lakehouse.catalog": settings.catalog_tag},
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
