"""The data centre's Kafka as it is deployed: three KRaft nodes, every topic on three
replicas, two in sync to acknowledge. A broker killed with kill -9 while events are
published and consumed (the leader of most partitions, so leaders move and maybe the
group coordinator with them): every event the producer saw acknowledged reaches the
consumer group, publishing and consuming carry on without the service restarting, and
the node rejoins in sync when it comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from trailerlink_events import topics
from trailerlink_events.kafka import ConsumerRunner, Delivery, EventProducer, RetryPolicy
from trailerlink_events.messages import UploadCompleted, new_meta
from trailerlink_testing.kafka import KafkaCluster
from trailerlink_testing.waiting import async_wait_until

TOPIC = topics.CENTRAL_UPLOAD_COMPLETED  # 12 partitions: the ingest replicas' work queue
EVENTS = 400
KILL_AFTER = 150


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    c = KafkaCluster(Path(tmp_path_factory.mktemp("kafka-cluster")))
    c.start()
    c.create_topics("central")
    yield c
    c.stop()


@pytest.fixture
async def admin(cluster: KafkaCluster) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=10000)
    await client.start()
    yield client
    await client.close()


async def _partitions(admin: AIOKafkaAdminClient) -> list[dict]:  # type: ignore[type-arg]
    (described,) = await admin.describe_topics([TOPIC])
    return sorted(described["partitions"], key=lambda p: p["partition"])


async def test_every_central_topic_partition_has_three_replicas_two_needed(
    admin: AIOKafkaAdminClient,
) -> None:
    partitions = await _partitions(admin)
    assert len(partitions) == 12
    assert all(len(p["replicas"]) == 3 and len(p["isr"]) == 3 for p in partitions)
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
    config = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert config["min.insync.replicas"] == "2"


async def test_a_broker_killed_mid_stream_loses_nothing_acknowledged(
    cluster: KafkaCluster, admin: AIOKafkaAdminClient
) -> None:
    producer = EventProducer(cluster.bootstrap, client_id="test-replicated")
    await producer.start()
    received: set[str] = set()

    async def handle(delivery: Delivery) -> None:
        received.add(delivery.event.meta.event_id)

    runner = ConsumerRunner(
        bootstrap_servers=cluster.bootstrap,
        group_id="ingest-replicated-test",
        topics=[TOPIC],
        handler=handle,
        producer=producer,
        dead_letter_topic=topics.CENTRAL_DEAD_LETTER,
        retry=RetryPolicy(max_attempts=3, initial_backoff_seconds=0.05, max_backoff_seconds=0.5),
    )
    stop = asyncio.Event()
    consuming = asyncio.create_task(runner.run(stop))
    acknowledged: list[str] = []

    async def publish(n: int) -> None:
        event = UploadCompleted(meta=new_meta("ingest", "trailer-replicated"), upload_id=f"u{n}")
        # Returns only once two of three replicas have it (acks=all, min ISR 2).
        await asyncio.wait_for(producer.publish(TOPIC, f"object-{n}", event), 90)
        acknowledged.append(event.meta.event_id)

    try:
        for first in range(0, KILL_AFTER, 10):
            await asyncio.gather(*(publish(n) for n in range(first, first + 10)))
        await async_wait_until(
            _async(lambda: len(received) >= KILL_AFTER // 2), 60, "the group consuming"
        )
        victim = await asyncio.to_thread(cluster.busiest_leader, TOPIC)
        # kill -9 while a batch is in flight: no flush, no leadership handed over.
        in_flight = asyncio.gather(*(publish(n) for n in range(KILL_AFTER, KILL_AFTER + 10)))
        await asyncio.to_thread(victim.kill)
        await in_flight
        for first in range(KILL_AFTER + 10, EVENTS, 10):
            await asyncio.gather(*(publish(n) for n in range(first, first + 10)))

        assert len(acknowledged) == EVENTS
        await async_wait_until(
            _async(lambda: received >= set(acknowledged)),
            120,
            "every acknowledged event consumed with one broker dead",
        )
        assert not consuming.done(), "the consumer stopped instead of riding out the failover"

        # The node returns and catches up: every partition in sync on three replicas again.
        await asyncio.to_thread(victim.start, wait=False)
        await async_wait_until(
            _async_call(admin, lambda ps: all(len(p["isr"]) == 3 for p in ps)),
            120,
            "the restarted broker back in every partition's in-sync set",
        )
    finally:
        stop.set()
        await asyncio.wait_for(consuming, 60)
        await producer.stop()
        if not all(b.running for b in cluster.brokers):
            await asyncio.to_thread(_restart_dead, cluster)


def _async(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


def _async_call(
    admin: AIOKafkaAdminClient,
    condition: Callable[[list[dict]], bool],  # type: ignore[type-arg]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition(await _partitions(admin))

    return check


def _restart_dead(cluster: KafkaCluster) -> None:
    """Leave the module's cluster whole for the next test even if this one failed."""
    for b in cluster.brokers:
        if not b.running:
            b.start(wait=False)
    cluster.wait_brokers(len(cluster.brokers))
