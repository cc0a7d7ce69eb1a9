"""Delivery policy of the lineage events beyond "down, then back": an event the backend refuses for
good is dead-lettered beside the spool (with its reason) and the rest goes on, while a transient
failure still spools; the refusal classification (HTTP status, Kafka error) from hand-picked
codes; and the file transport's events.jsonl rotated by size, keeping the newest N. The network
edge is real but local: an HTTP receiver on loopback, a Kafka producer pointed at a loopback port
nobody listens on (no broker is needed for what is tested)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import pytest
from confluent_kafka import KafkaError

from tasks.lineage.emit import (
    Delivery,
    dead_letter_path,
    dead_letters,
    deliver,
    expired_rotations,
    http_refusal_is_permanent,
    kafka_refusal_is_permanent,
    make_transport,
    rotated_name,
    spool_path,
)
from tests.unit.test_lineage_events import _event, _free_port, _Receiver, _settings


@pytest.fixture(autouse=True)
def embedded_settings(monkeypatch):
    """Embedded defaults, whatever the caller exported (`make test` exports LAKEHOUSE_CONFIG)."""
    import os

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)


def _sized(n: int) -> dict:
    """``_event(n)`` at a fixed time: events 10..99 all take the same bytes."""
    return {**_event(n), "eventTime": "2026-12-01T05:44:12.345678+00:00"}


def _jobs(lines_or_events) -> list[str]:
    return [e["job"]["name"] for e in lines_or_events]


# ---- classification --------------------------------------------------------------------------

@pytest.mark.parametrize("status, permanent", [
    (400, True), (413, True), (415, True), (422, True),  # the event itself: malformed, too large
    (408, False), (425, False), (429, False),  # try again later
    (401, False), (403, False), (404, False), (405, False), (407, False),  # every event would get it: config
    (500, False), (502, False), (503, False), (504, False),  # the backend's trouble
    (200, False), (201, False), (302, False),
])
def test_which_http_statuses_refuse_the_event_for_good(status, permanent):
    assert http_refusal_is_permanent(status) is permanent


@pytest.mark.parametrize("error, permanent", [
    (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), True),
    (KafkaError(KafkaError.RECORD_LIST_TOO_LARGE), True),
    (KafkaError(KafkaError.INVALID_RECORD), True),
    # what a delivery report of a broker that is down looks like: not retriable(), yet transient
    (KafkaError(KafkaError._MSG_TIMED_OUT), False),
    (KafkaError(KafkaError._TRANSPORT), False),
    (KafkaError(KafkaError._ALL_BROKERS_DOWN), False),
    (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), False),
    (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), False),  # every record would get it: config
    (KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, retriable=True), False),
    (KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, retriable=True), False),  # the client says it may pass
    (KafkaError(KafkaError.INVALID_RECORD, fatal=True), False),  # the producer's state, not the record
])
def test_which_kafka_errors_refuse_the_record_for_good(error, permanent):
    assert kafka_refusal_is_permanent(error) is permanent


# ---- dead letters ----------------------------------------------------------------------------

def test_a_refused_event_is_dead_lettered_with_its_reason_and_the_rest_goes_on(tmp_path):
    port = _free_port()
    settings = _settings(tmp_path, lineage_transport="http", lineage_url=f"http://127.0.0.1:{port}")
    events = {n: _event(n) for n in range(1, 6)}
    assert deliver(settings, [events[1], events[2]]) == Delivery(0, 2)  # down: spooled, job-2 first in line
    refuse = {"job-2": 422, "job-4": 413}
    receiver = _Receiver(port, status=lambda e: refuse.get(e["job"]["name"], 201))
    before = datetime.now(timezone.utc)
    try:
        assert deliver(settings, [events[3], events[4], events[5]]) == Delivery(3, 0, 2)
    finally:
        receiver.stop()
    assert _jobs(e for _, _, e in receiver.received) == ["job-1", "job-3", "job-5"]
    assert not spool_path(settings).exists()
    dead = dead_letters(settings)
    assert _jobs(d["event"] for d in dead) == ["job-2", "job-4"]
    assert dead[0]["event"] == events[2] and dead[1]["event"] == events[4]  # the whole event, as it was
    assert dead[0]["reason"].startswith("HTTP 422 Unprocessable Entity") and '"message": "no"' in dead[0]["reason"]
    assert dead[1]["reason"].startswith("HTTP 413")
    assert all(before <= datetime.fromisoformat(d["dead_lettered_at"]) <= datetime.now(timezone.utc) for d in dead)
    assert dead_letter_path(settings).parent == spool_path(settings).parent
    assert dead_letter_path(settings).name == spool_path(settings).name.replace("spool-", "dead-")


def test_the_dead_letter_is_logged_once_naming_the_reason_and_the_file(tmp_path, caplog):
    port = _free_port()
    settings = _settings(tmp_path, lineage_transport="http", lineage_url=f"http://127.0.0.1:{port}")
    receiver = _Receiver(port, status=lambda e: 400 if e["job"]["name"] == "job-1" else 201)
    try:
        with caplog.at_level("WARNING", logger="tasks.lineage.emit"):
            assert deliver(settings, [_event(1), _event(2)]) == Delivery(1, 0, 1)
            assert deliver(settings, [_event(3)]) == Delivery(1, 0, 0)  # not retried, not logged again
    finally:
        receiver.stop()
    [warning] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "HTTP 400" in warning and str(dead_letter_path(settings)) in warning


@pytest.mark.parametrize("status", [503, 429, 401])
def test_a_transient_or_configuration_refusal_still_spools_from_there(tmp_path, status):
    port = _free_port()
    settings = _settings(tmp_path, lineage_transport="http", lineage_url=f"http://127.0.0.1:{port}")
    answer = {"code": status}
    receiver = _Receiver(port, status=lambda e: answer["code"] if e["job"]["name"] == "job-2" else 201)
    try:
        assert deliver(settings, [_event(1), _event(2), _event(3)]) == Delivery(1, 2)
        assert _jobs(json.loads(line) for line in spool_path(settings).read_text().splitlines()) == ["job-2", "job-3"]
        assert not dead_letter_path(settings).exists()
        answer["code"] = 201  # the backend is well again (or the key fixed): everything arrives, in order
        assert deliver(settings, [_event(4)]) == Delivery(3, 0)
    finally:
        receiver.stop()
    assert _jobs(e for _, _, e in receiver.received) == ["job-1", "job-2", "job-3", "job-4"]


def test_kafka_refusing_a_record_dead_letters_it_while_a_broker_that_is_down_spools(tmp_path):
    # the producer refuses a record over its message.max.bytes (1 MB) before any broker is asked;
    # the next event waits for a broker nobody runs and is spooled
    settings = _settings(tmp_path, lineage_transport="kafka", kafka_bootstrap=f"127.0.0.1:{_free_port()}",
                         lineage_timeout_seconds=0.3)
    huge = _event(1)
    huge["job"]["name"] = "x" * 1_100_000
    transport = make_transport(settings)
    assert deliver(settings, [huge, _event(2)], transport=transport) == Delivery(0, 1, 1)
    [dead] = dead_letters(settings)
    assert dead["event"] == huge and dead["reason"].startswith("Kafka refused the event: MSG_SIZE_TOO_LARGE")
    assert _jobs(json.loads(line) for line in spool_path(settings).read_text().splitlines()) == ["job-2"]


# ---- rotation of events.jsonl ----------------------------------------------------------------

def test_rotated_names_carry_the_utc_time_and_sort_by_it():
    assert rotated_name(datetime(2026, 12, 1, 5, 44, 12, 345678, tzinfo=timezone.utc)) == \
        "events-20261201T054412.345678Z.jsonl"
    names = ["events-20261201T054412.000002Z.jsonl", "events.jsonl", "events-20261130T235959.999999Z.jsonl",
             "spool-file-da39a3ee5e.jsonl", "events-20261201T054412.000001Z.jsonl", "events.jsonl.lock"]
    assert expired_rotations(names, keep=2) == ["events-20261130T235959.999999Z.jsonl"]
    assert expired_rotations(names, keep=1) == ["events-20261130T235959.999999Z.jsonl",
                                                 "events-20261201T054412.000001Z.jsonl"]
    assert expired_rotations(names, keep=5) == []


def test_events_jsonl_is_rotated_past_its_bound_and_only_the_newest_files_are_kept(tmp_path):
    from openlineage.client.serde import Serde

    line = len(Serde.to_json(_sized(10))) + 1  # the file transport's line; every _sized(10..19) has this size
    settings = _settings(tmp_path, lineage_file_max_bytes=2 * line, lineage_file_keep=2)
    for n in range(10, 17):
        assert deliver(settings, [_sized(n)]) == Delivery(1, 0)
    folder = settings.state_dir / "lineage"
    # a file takes events until it is *over* 2 lines: 3 events each, then it is renamed
    current = folder / "events.jsonl"
    assert _jobs(map(json.loads, current.read_text().splitlines())) == ["job-16"]
    rotated = sorted(folder.glob("events-*.jsonl"))
    assert [_jobs(map(json.loads, p.read_text().splitlines())) for p in rotated] == [
        ["job-10", "job-11", "job-12"], ["job-13", "job-14", "job-15"]]
    for n in range(17, 20):
        deliver(settings, [_sized(n)])
    rotated = sorted(folder.glob("events-*.jsonl"))  # job-10..12 aged out: only the newest 2 are kept
    assert [_jobs(map(json.loads, p.read_text().splitlines())) for p in rotated] == [
        ["job-13", "job-14", "job-15"], ["job-16", "job-17", "job-18"]]
    assert _jobs(map(json.loads, current.read_text().splitlines())) == ["job-19"]


def test_concurrent_writers_rotate_once_each_time_and_lose_no_event(tmp_path):
    settings = _settings(tmp_path, lineage_file_max_bytes=1, lineage_file_keep=1000)
    writers, per_writer = 4, 15

    def write(w: int) -> None:
        transport = make_transport(settings)  # one per writer, as two flows would have
        for n in range(per_writer):
            transport.emit(_event(w * 100 + n))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    folder = settings.state_dir / "lineage"
    files = [folder / "events.jsonl", *folder.glob("events-*.jsonl")]
    contents = [[json.loads(line) for line in p.read_text().splitlines()] for p in files]
    # over 1 byte after every append: each file holds exactly one event, none lost, none twice
    assert all(len(c) == 1 for c in contents)
    assert sorted(_jobs(e for c in contents for e in c)) == sorted(
        f"job-{w * 100 + n}" for w in range(writers) for n in range(per_writer))


@pytest.mark.parametrize("key, value", [("lineage_file_max_bytes", 0), ("lineage_file_max_bytes", -5),
                                        ("lineage_file_keep", 0), ("lineage_file_max_bytes", "lots")])
def test_a_bad_rotation_setting_names_its_key(tmp_path, key, value):
    from tasks.settings import SettingsError

    with pytest.raises(SettingsError) as raised:
        _settings(tmp_path, **{key: value})
    assert raised.value.key == f"LAKEHOUSE_{key.upper()}"
