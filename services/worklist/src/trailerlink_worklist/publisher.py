"""Moves events from the cache's outbox to Kafka, oldest first.

The outbox row was written in the same transaction as the change it announces, so
Kafka being down delays an event and never loses it. A row is deleted only after the
broker acknowledged it (acks=all); a crash in between publishes it again, which
consumers tolerate (at-least-once, idempotent by event id).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import EVENT_TYPES
from trailerlink_events.topics import topic as topic_entry

from trailerlink_worklist import metrics
from trailerlink_worklist.cache import Cache

log = logging.getLogger(__name__)


class OutboxPublisher:
    def __init__(
        self,
        cache: Cache,
        producer: EventProducer,
        idle_seconds: float = 0.2,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self.cache = cache
        self.producer = producer
        self.idle_seconds = idle_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Something was queued: publish without waiting for the next tick."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            batch = await asyncio.to_thread(self.cache.outbox_batch, 200)
            metrics.OUTBOX_PENDING.set(len(batch))
            if batch and self.producer.connected:
                done: list[int] = []
                try:
                    for item in batch:
                        cls = EVENT_TYPES[topic_entry(item.topic).message]
                        await self.producer.publish(
                            item.topic, item.key, cls.FromString(item.payload)
                        )
                        done.append(item.id)
                    backoff = 0.5
                except KafkaError as exc:
                    log.warning(
                        "kafka unavailable; events wait in the outbox",
                        extra={"error": type(exc).__name__, "pending": len(batch)},
                    )
                    backoff = min(self.max_backoff_seconds, backoff * 2)
                finally:
                    if done:
                        await asyncio.to_thread(self.cache.outbox_done, done)
                if len(done) == len(batch):
                    continue  # more may be waiting
                await self._sleep(stop, backoff)
                continue
            await self._sleep(stop, self.idle_seconds)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
