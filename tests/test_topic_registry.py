"""One topic registry: code constants, message types and the real broker agree with it."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from trailerlink_events import topics
from trailerlink_events.messages import EVENT_TYPES
from trailerlink_testing.kafka import KafkaBroker


def test_every_topic_is_versioned_and_carries_a_known_message() -> None:
    for topic in topics.registry().values():
        assert topic.name.endswith(".v1"), topic.name
        assert topic.name.startswith(f"trailerlink.{topic.site}."), topic.name
        assert topic.is_dead_letter or topic.message in EVENT_TYPES, topic.name
        assert topic.partitions >= 1


def test_each_site_has_exactly_one_dead_letter_topic() -> None:
    assert topics.dead_letter_topic("trailer") == topics.TRAILER_DEAD_LETTER
    assert topics.dead_letter_topic("central") == topics.CENTRAL_DEAD_LETTER


def test_dead_letters_never_expire() -> None:
    for site in ("trailer", "central"):
        assert topics.topic(topics.dead_letter_topic(site)).retention_ms == -1


def test_broker_topics_match_the_registry(kafka_broker: KafkaBroker) -> None:
    async def describe() -> tuple[dict, list]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
        await admin.start()
        try:
            names = list(topics.registry())
            meta = await admin.describe_topics(names)
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
            )
            return {t["topic"]: len(t["partitions"]) for t in meta}, configs
        finally:
            await admin.close()

    partitions, configs = asyncio.run(describe())
    for topic in topics.registry().values():
        assert partitions[topic.name] == topic.partitions, topic.name
    retention = {}
    for response in configs:
        for resource in response.resources:
            _code, _msg, _type, name, entries = resource[:5]
            retention[name] = {e[0]: e[1] for e in entries}
    for topic in topics.registry().values():
        assert retention[topic.name]["retention.ms"] == str(topic.retention_ms), topic.name
        assert retention[topic.name]["cleanup.policy"] == topic.cleanup_policy


def test_auto_creation_is_off(kafka_broker: KafkaBroker) -> None:
    from trailerlink_events.kafka import list_topics

    async def produce_to_unknown() -> set[str]:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_broker.bootstrap, request_timeout_ms=3000
        )
        await producer.start()
        try:
            await producer.send_and_wait("trailerlink.not-in-registry.v1", b"x")
        except KafkaError:
            pass
        finally:
            await producer.stop()
        return await list_topics(kafka_broker.bootstrap)

    assert "trailerlink.not-in-registry.v1" not in asyncio.run(produce_to_unknown())
