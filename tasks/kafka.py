"""Kafka access: topic administration (and, with the ingest issue, the micro-batch reader)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic

from tasks.settings import Settings


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 5000})


def ensure_topic(settings: Settings, topic: str | None = None, partitions: int | None = None) -> list[str]:
    """Create the topic if it is missing; returns ``[topic]`` when it was created, else ``[]``."""
    topic = topic or settings.kafka_topic
    admin = admin_client(settings)
    if topic in admin.list_topics(timeout=10).topics:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=partitions or settings.kafka_partitions,
                replication_factor=1,
                # the contract allows values of several MB
                config={"max.message.bytes": str(16 * 1024 * 1024)},
            )
        ]
    )
    try:
        futures[topic].result(timeout=30)
    except Exception as exc:  # a concurrent creator may have won
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise
        return []
    return [topic]
