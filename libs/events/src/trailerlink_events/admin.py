"""Cluster administration: creating the registry's topics of a site, the reachability
probe that lists the cluster's topics, and a topic's partitions as the cluster has them.

Kept apart because it is used at deployment and start-up (the topics job,
``trailerlink_events.create_topics``, the test harnesses), not by a running service's
event path, and speaks to the cluster through the admin client, not a producer or a
consumer.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from trailerlink_events.topics import Site, topics_for_site


async def create_topics(
    bootstrap_servers: str, site: Site, replication_factor: int = 1, timeout_s: float = 30
) -> list[str]:
    """Create the registry's topics of ``site`` that do not exist yet; returns those created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics_for_site(site) if t.name not in existing]
        if wanted:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            t.name,
                            t.partitions,
                            replication_factor,
                            topic_configs=t.kafka_configs(),
                        )
                        for t in wanted
                    ],
                    timeout_ms=int(timeout_s * 1000),
                )
            except TopicAlreadyExistsError:
                pass  # another process created them meanwhile
            await _until_served(admin, [t.name for t in wanted], timeout_s)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def _until_served(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """CreateTopics answers once the controller has committed the topics; a broker serves
    their metadata a moment later (KRaft; longer the more partitions). Wait for that, so
    that "created" means a client can use them. Raises TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if all(t["error_code"] == 0 and t["partitions"] for t in described):
            return
        if time.monotonic() > deadline:
            missing = sorted(
                t["topic"] for t in described if t["error_code"] != 0 or not t["partitions"]
            )
            raise TimeoutError(f"topics created but not served: {missing}")
        await asyncio.sleep(0.1)


async def list_topics(bootstrap_servers: str) -> set[str]:
    """Names of the topics the cluster has (an admin call: proves the broker answers)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def partitions_of(bootstrap_servers: str, name: str) -> list[int]:
    """The partition ids topic ``name`` has in the cluster (none if it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([name])
        if described["error_code"] != 0:
            return []
        return sorted(int(p["partition"]) for p in described["partitions"])
    finally:
        await admin.close()
