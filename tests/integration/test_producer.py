"""The producer against the real broker: every generated record arrives, byte for byte."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timezone

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tasks.simulator import TrafficProfile, generate, produce

pytestmark = pytest.mark.stack

PARTITIONS = 3


@pytest.fixture
def topic_settings(stack_settings):
    """Settings aimed at a fresh topic, deleted afterwards so test runs do not pile up data."""
    name = f"test-producer-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap})
    # The topic-level limit lets the multi-MB value through whatever the broker's default is.
    created = admin.create_topics(
        [NewTopic(name, PARTITIONS, 1, config={"max.message.bytes": str(16 * 1024 * 1024)})]
    )
    created[name].result(timeout=30)
    try:
        yield stack_settings.model_copy(update={"kafka_topic": name})
    finally:
        admin.delete_topics([name])[name].result(timeout=30)


def consume_all(settings, expected: int, timeout_s: float = 60.0) -> list:
    """Every record of the topic, read from the beginning of each partition."""
    consumer = Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": f"{settings.kafka_topic}-reader",
        "enable.auto.commit": False,
    })
    try:
        topic = settings.kafka_topic
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages = []
        deadline = datetime.now().timestamp() + timeout_s
        while len(messages) < expected and datetime.now().timestamp() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                assert message.error() is None, message.error()
                messages.append(message)
        return messages
    finally:
        consumer.close()


def test_every_record_arrives_byte_identical(topic_settings):
    # event time ends now: old Kafka timestamps would be swept by the broker's retention mid-test
    end = datetime.now(timezone.utc).replace(microsecond=0)
    profile = TrafficProfile(events=2000, seed=3, duplicate_rate=0.03, late_rate=0.02, malformed_rate=0.02,
                             wrong_conversion_rate=0.01, end=end)
    progress: list[int] = []

    report = produce(topic_settings, profile, progress=progress.append)

    expected = list(generate(profile))
    assert report.events == len(expected) == 2000
    assert report.delivery_errors == 0 and report.partitions == PARTITIONS
    assert report.per_kind == dict(Counter(r.kind for r in expected)) | {
        k: 0 for k in report.per_kind if k not in {r.kind for r in expected}}
    assert report.bytes == sum(len(r.value or b"") + len(r.key or b"") for r in expected)
    assert progress[-1] == 2000
    assert any(r.detail == "huge" for r in expected)

    messages = consume_all(topic_settings, len(expected))
    assert len(messages) == len(expected)
    got = Counter((m.key(), m.value(), m.timestamp()[1]) for m in messages)
    want = Counter((r.key, r.value, r.timestamp_ms) for r in expected)
    assert got == want, {"missing": len(want - got), "unexpected": len(got - want)}

    # duplicates that name a partition land there (the original may share it)
    pinned = Counter((r.partition % PARTITIONS, r.value) for r in expected if r.partition is not None)
    landed = Counter((m.partition(), m.value()) for m in messages)
    assert pinned and all(landed[k] >= n for k, n in pinned.items())
