"""Reading a topic from the start in tests: what did the service really publish?"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from trailerlink_events import topics
from trailerlink_events.kafka import Delivery, PermanentError, _headers_to_dict, decode_event

from trailerlink_testing.waiting import ConditionTimeout


async def read_events(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Delivery]], bool],
    *,
    timeout: float = 30.0,
    match: Callable[[Delivery], bool] = lambda _d: True,
) -> list[Delivery]:
    """Read ``topic`` from the beginning until ``until(matching records)`` is true.

    Uses a throwaway consumer group and commits nothing. Raises ConditionTimeout with
    the count seen so far if the deadline passes.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:12]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: list[Delivery] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if until(seen):
                return seen
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConditionTimeout(f"{topic}: condition not met, {len(seen)} matching seen")
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batches.values():
                for record in records:
                    delivery = _delivery(record)
                    if delivery is not None and match(delivery):
                        seen.append(delivery)
    finally:
        await consumer.stop()


def _delivery(record: ConsumerRecord) -> Delivery | None:
    """The record as a Delivery; dead letters carry no decoded event (``event=None``).

    Topics are shared by the whole test session and some tests put poison records on
    them on purpose, so a record that does not decode is skipped, not raised.
    """
    headers = _headers_to_dict(record.headers)
    event = None
    if not topics.topic(record.topic).is_dead_letter:
        try:
            event = decode_event(record.topic, record.value or b"", headers)
        except PermanentError:
            return None
    key = (record.key or b"").decode("utf-8", "replace")
    return Delivery(record.topic, record.partition, record.offset, key, event, headers)  # type: ignore[arg-type]


def read_events_sync(*args: object, **kwargs: object) -> list[Delivery]:
    """:func:`read_events` for synchronous tests."""
    return asyncio.run(read_events(*args, **kwargs))  # type: ignore[arg-type]


async def start_group_at_end(bootstrap: str, group: str, topic_names: list[str]) -> None:
    """Commit ``group``'s offsets at the current end of ``topic_names``.

    Topics are shared by the whole test session; a service under test that consumes
    as ``group`` then sees only what the test publishes from now on, not every event
    earlier tests left there (which it would otherwise process, or dead-letter).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(name, p)
            for name in topic_names
            for p in range(topics.topic(name).partitions)
        ]
        consumer.assign(partitions)
        await consumer.commit(dict(await consumer.end_offsets(partitions)))
    finally:
        await consumer.stop()
