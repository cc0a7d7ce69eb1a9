"""The Kafka transport of the lineage events against the stack's real broker: events sent through
the project's transport (``deliver`` with ``lineage_transport = kafka``) to a private topic are read
back, in order and byte for byte the JSON that was sent; a broker that does not answer loses none
of them (they wait in the spool), nor does one that refuses one for good (it goes to the
dead-letter file, and the events after it are sent). Topics are deleted at the end."""

from __future__ import annotations

import json
import socket
from contextlib import contextmanager
import uuid

import pytest
from confluent_kafka.admin import NewTopic

from tasks.kafka import admin_client
from tasks.lineage.emit import Delivery, dead_letter_path, deliver, spool_path
from tasks.lineage.events import RunFacts, TableState, build_event
from tests.integration.test_producer import consume_all

pytestmark = pytest.mark.stack

FACTS = TableState("silver.fact_conversions", "s3://lakehouse-silver/fact_conversions", 41,
                   (("event_id", "string"),), rows=2, bytes=512, files=1)
FLOW_RUN = "0193a3c4-0000-7000-8000-0000000000a1"


@contextmanager
def private_topic(stack_settings, state_dir, **config: str):
    """Settings sending lineage to a fresh one-partition topic (so order is Kafka's order) with
    ``config``, and a private spool; the topic is deleted afterwards."""
    topic = f"it-lineage-{uuid.uuid4().hex[:10]}"
    settings = stack_settings.model_copy(update={
        "lineage_transport": "kafka", "lineage_kafka_topic": topic, "lineage_audit": False,
        "lineage_timeout_seconds": 2.0, "state_dir": state_dir})
    admin = admin_client(settings)  # kept referenced until the deletion is done
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(timeout=30)
    try:
        yield settings
    finally:
        admin.delete_topics([topic], operation_timeout=30)[topic].result(timeout=30)


@pytest.fixture
def lineage_topic(stack_settings, tmp_path):
    with private_topic(stack_settings, tmp_path / "state") as settings:
        yield settings


def read_back(settings, expected: int, timeout_s: float = 10.0) -> list:
    """The lineage topic's records, read from the beginning (test_producer's reader)."""
    return consume_all(settings.model_copy(update={"kafka_topic": settings.lineage_kafka_topic}), expected, timeout_s)


def run_events() -> list[dict]:
    facts = RunFacts("promote-silver", FLOW_RUN, outputs=(FACTS,))
    return [build_event("START", facts, "lakehouse", "iceberg+http://127.0.0.1:8181"),
            build_event("COMPLETE", facts, "lakehouse", "iceberg+http://127.0.0.1:8181")]


def test_events_sent_through_the_kafka_transport_arrive_in_order_and_intact(lineage_topic):
    sent = run_events()
    assert deliver(lineage_topic, sent) == Delivery(2, 0)
    assert not spool_path(lineage_topic).exists()

    messages = read_back(lineage_topic, expected=len(sent))
    assert [json.loads(m.value()) for m in messages] == sent
    assert [m.key() for m in messages] == [b"lakehouse", b"lakehouse"]
    assert [(e["eventType"], e["run"]["runId"]) for e in map(json.loads, (m.value() for m in messages))] == [
        ("START", FLOW_RUN), ("COMPLETE", FLOW_RUN)]


def test_a_broker_that_does_not_answer_keeps_the_events_in_the_spool(lineage_topic):
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = lineage_topic.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}", "lineage_timeout_seconds": 1.0})
    sent = run_events()
    assert deliver(down, sent) == Delivery(0, 2)
    assert [json.loads(line) for line in spool_path(down).read_text().splitlines()] == sent


def test_an_event_the_broker_refuses_is_dead_lettered_not_counted_as_sent_nor_blocking(stack_settings, tmp_path):
    # the topic takes 1 KiB messages: the broker answers MESSAGE_TOO_LARGE (which openlineage's own
    # delivery callback only logs) for the two large events, and takes the small one between them
    large = run_events()
    assert all(len(json.dumps(e)) > 1024 for e in large)
    small_event = build_event("START", RunFacts("p", FLOW_RUN), "l", "c")
    assert len(json.dumps(small_event)) < 900
    with private_topic(stack_settings, tmp_path / "state", **{"max.message.bytes": "1024"}) as small:
        assert deliver(small, [large[0], small_event, large[1]]) == Delivery(1, 0, 2)
        assert not spool_path(small).exists()
        dead = [json.loads(line) for line in dead_letter_path(small).read_text().splitlines()]
        assert [d["event"] for d in dead] == large
        assert all(d["reason"].startswith("Kafka refused the event: MSG_SIZE_TOO_LARGE") for d in dead)
        assert [json.loads(m.value()) for m in read_back(small, expected=1, timeout_s=5.0)] == [small_event]
