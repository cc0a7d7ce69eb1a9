"""Which faults a task retries as they are: transient ones only, never bad input or a stale plan."""

from __future__ import annotations

import errno
import socket

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from confluent_kafka import KafkaError, KafkaException
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ServerError, ServiceUnavailableError

from tasks.commits import OffsetsMovedError, StaleCommitError
from tasks.offsets import OffsetProblem, OffsetsOutOfRangeError
from tasks.orchestration import is_transient


def _client_error(status: int, code: str = "InternalError") -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


class _RayLike(Exception):
    def __init__(self, cause):
        super().__init__("task failed")
        self.cause = cause


TRANSIENT = [
    KafkaException(KafkaError(KafkaError._TRANSPORT)),
    KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)),
    # what get_watermark_offsets raised right after a broker restart (found by tests/e2e/test_retries.py)
    KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, fatal=False, retriable=False)),
    KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE, fatal=False, retriable=False)),
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    TimeoutError("timed out"),
    socket.timeout("read timed out"),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    OSError("When reading information for key 'x' in bucket 'b': AWS Error NETWORK_CONNECTION: connection refused"),
    OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate (503)"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:8333"),
    _client_error(503, "SlowDown"),
    _client_error(500),
    _client_error(429, "Throttling"),
    ServerError("500 Internal Server Error"),
    ServiceUnavailableError("catalog down"),
    _RayLike(KafkaException(KafkaError(KafkaError._TRANSPORT))),
]

PERMANENT = [
    FileNotFoundError(errno.ENOENT, "No such file", "s3://lakehouse-bronze/x.parquet"),
    PermissionError(errno.EACCES, "denied"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError("Parquet magic bytes not found in footer: corrupt file"),
    ValueError("bad data"),
    TypeError("bug"),
    KeyError("bug"),
    AttributeError("bug"),
    _client_error(403, "AccessDenied"),
    _client_error(404, "NoSuchKey"),
    KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, fatal=False, retriable=False)),
    StaleCommitError("another run committed"),
    OffsetsMovedError("offsets moved"),
    CommitFailedException("conflict"),
    NoSuchTableError("silver.nope"),
    OffsetsOutOfRangeError([OffsetProblem("t", 0, 50, 0, 10)]),
    _RayLike(ValueError("bug inside an actor")),
    None,
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_faults_are_retried(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_bad_input_missing_files_bugs_and_stale_plans_are_never_retried_as_they_are(exc):
    assert not is_transient(exc)


class _Log:
    def __init__(self):
        self.lines = []

    def warning(self, message, *args):
        self.lines.append(message % args)


def test_a_conflict_plans_again_until_a_run_lands(monkeypatch):
    from tasks import orchestration

    monkeypatch.setattr(orchestration.time, "sleep", lambda seconds: None)
    calls = []

    def run():
        calls.append(1)
        if len(calls) < 3:
            raise OffsetsMovedError("another ingest committed first")
        return "landed"

    log = _Log()
    assert orchestration.replan_on_conflict(run, "ingest", log) == "landed"
    assert len(calls) == 3 and len(log.lines) == 2 and "planning again" in log.lines[0]


def test_a_conflict_that_never_clears_is_raised_and_other_errors_are_not_retried(monkeypatch):
    from tasks import orchestration

    monkeypatch.setattr(orchestration.time, "sleep", lambda seconds: None)
    calls = []

    def conflicted():
        calls.append(1)
        raise StaleCommitError("always")

    with pytest.raises(StaleCommitError):
        orchestration.replan_on_conflict(conflicted, "silver", _Log(), attempts=3)
    assert len(calls) == 3

    def broken():
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        orchestration.replan_on_conflict(broken, "silver", _Log())
    assert len(calls) == 4
