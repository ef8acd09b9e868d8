"""The one transactional outbox publisher: events committed with the state they
announce, then published to Kafka in order, each exactly once.

A service writes an event into its own outbox storage inside the same SQLite
transaction as the state change it announces, with the trace context current at that
moment (:func:`current_trace_headers`). :class:`OutboxPublisher` publishes the unpublished
events of an :class:`OutboxStore` in sequence order and has the store mark them
published (update a column, or delete the row). Kafka being down only delays
publication: the rows wait on disk.

Exactly once: a crash (or a failed send whose outcome is unknown) between the broker's
acknowledgement and the ``published`` mark would otherwise publish an event twice.
So whenever publication starts after such an uncertainty, the publisher first reads
the topics back from shortly before the oldest unpublished event and has the store mark
the events it finds there (by ``EventMeta.event_id``) as published.

Users: the gateway's spool index (``trailerlink_spool.outbox.Outbox``, rows marked
published, trace context stored with each row) and the worklist's encrypted cache
(``trailerlink_worklist.outbox.CacheOutbox``, rows deleted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate
from prometheus_client import Counter, Gauge

from trailerlink_events.admin import partitions_of
from trailerlink_events.kafka import EventProducer
from trailerlink_events.messages import EVENT_TYPES
from trailerlink_events.topics import topic as topic_entry

log = logging.getLogger(__name__)

# How far before the oldest unpublished event the read-back starts: covers clock
# differences between this host and the broker's record timestamps.
RECONCILE_MARGIN_SECONDS = 300.0

OUTBOX_PENDING = Gauge(
    "trailerlink_outbox_pending_events", "Events committed but not yet published", ["service"]
)
OUTBOX_PUBLISHED = Counter(
    "trailerlink_outbox_published_total", "Events published from the outbox", ["service", "topic"]
)
OUTBOX_RECOVERED = Counter(
    "trailerlink_outbox_recovered_total",
    "Unpublished outbox events found already on the topic (not published again)",
    ["service"],
)
KAFKA_CONNECTED = Gauge(
    "trailerlink_outbox_kafka_connected", "1 while the outbox publisher reaches Kafka", ["service"]
)


@dataclass(frozen=True)
class OutboxEvent:
    """An event to publish: topic, record key, the event and extra record headers."""

    topic: str
    key: str
    event: Message
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class PendingEvent:
    """An unpublished event as stored: the record to send, byte for byte."""

    seq: int
    event_id: str
    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]
    created_at: float


def current_trace_headers() -> list[tuple[str, bytes]]:
    """The W3C trace context current now, as record headers (store them at enqueue)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


class OutboxStore(Protocol):
    """Where a service's outbox rows live. Every method is blocking (the publisher calls
    them through ``asyncio.to_thread``); marks are durable when they return."""

    def pending(self, limit: int = 500) -> list[PendingEvent]:
        """Unpublished events, oldest (lowest ``seq``) first."""
        ...

    def pending_count(self) -> int: ...

    def mark_published(self, seqs: Sequence[int]) -> None:
        """Record that these events are on the broker."""
        ...

    def mark_published_by_event_id(self, event_ids: Sequence[str]) -> int:
        """Mark unpublished events with these ids published; returns how many."""
        ...


ProducerFactory = Callable[[], Awaitable[EventProducer]]


@dataclass
class OutboxPublisher:
    """Publishes an :class:`OutboxStore` to Kafka; run ``run(stop)`` as a service task.

    It owns its producer: made on start, and made afresh after a failed send.
    """

    outbox: OutboxStore
    bootstrap_servers: str
    service: str
    client_id: str = "trailerlink"
    batch_size: int = 200
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 5.0
    idle_seconds: float = 1.0
    """How long to wait, with nothing pending, before looking again unless woken."""
    healthy: bool = field(default=False, init=False)
    """True while the last publish attempt succeeded (callers may wait for events)."""
    _wake: asyncio.Event | None = field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    def wake(self) -> None:
        """Ask the publisher to look at the outbox now (callable from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def mark_slow(self) -> None:
        """A caller waited in vain: stop waiting for publication until one succeeds."""
        self.healthy = False

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        uncertain = True  # after a restart, a previous run may have crashed mid-publish
        failures = 0
        producer: EventProducer | None = None
        try:
            while not stop.is_set():
                try:
                    if producer is None:
                        producer = EventProducer(self.bootstrap_servers, self.client_id)
                        await producer.start()
                    if uncertain:
                        await self.reconcile()
                        uncertain = False
                    published = await self._publish_some(producer)
                    KAFKA_CONNECTED.labels(self.service).set(1)
                    failures = 0
                    if published:
                        self.healthy = True
                        continue  # there may be more
                    self.healthy = True
                    await self._idle(stop, self.idle_seconds)
                except Exception as exc:
                    # Unknown outcome for the record in flight: read back before resending.
                    uncertain = True
                    self.healthy = False
                    KAFKA_CONNECTED.labels(self.service).set(0)
                    failures += 1
                    delay = min(
                        self.retry_max_seconds,
                        self.retry_initial_seconds * 2 ** min(failures - 1, 10),
                    )
                    log.warning(
                        "outbox publish failed; will retry",
                        extra={
                            "error": type(exc).__name__,
                            "retry_in_s": delay,
                            "pending": await asyncio.to_thread(self.outbox.pending_count),
                        },
                    )
                    if producer is not None:
                        await _stop_quietly(producer)
                        producer = None
                    # New events must not cut the back-off short: they wait on disk.
                    await self._idle(stop, delay, wakeable=False)
        finally:
            self.healthy = False
            if producer is not None:
                await _stop_quietly(producer)

    async def _idle(self, stop: asyncio.Event, seconds: float, wakeable: bool = True) -> None:
        assert self._wake is not None
        waiters = {asyncio.ensure_future(stop.wait())}
        if wakeable:
            waiters.add(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            self._wake.clear()

    async def _publish_some(self, producer: EventProducer) -> int:
        pending = await asyncio.to_thread(self.outbox.pending, self.batch_size)
        OUTBOX_PENDING.labels(self.service).set(len(pending))
        done: list[int] = []
        try:
            for item in pending:
                await producer.publish_raw(item.topic, item.key.encode(), item.value, item.headers)
                done.append(item.seq)
                OUTBOX_PUBLISHED.labels(self.service, item.topic).inc()
                # Mark in small groups so waiting callers hear about their event soon.
                if len(done) >= 20:
                    await asyncio.to_thread(self.outbox.mark_published, done)
                    done = []
        finally:
            if done:
                await asyncio.to_thread(self.outbox.mark_published, done)
        if pending:
            OUTBOX_PENDING.labels(self.service).set(
                await asyncio.to_thread(self.outbox.pending_count)
            )
        return len(pending)

    async def reconcile(self) -> int:
        """Mark unpublished events that are already on their topics as published.

        Reads each topic with unpublished events from shortly before the oldest of
        them to its current end. Returns how many were found. Events without an
        ``event_id`` cannot be recognised and are left to be published.
        """
        pending = await asyncio.to_thread(self.outbox.pending, 1_000_000)
        pending = [p for p in pending if p.event_id]
        if not pending:
            return 0
        wanted = {p.event_id for p in pending}
        found: list[str] = []
        by_topic: dict[str, float] = {}
        for p in pending:
            by_topic[p.topic] = min(by_topic.get(p.topic, p.created_at), p.created_at)
        for name, oldest in by_topic.items():
            found.extend(
                await self._event_ids_since(name, oldest - RECONCILE_MARGIN_SECONDS, wanted)
            )
        changed = await asyncio.to_thread(self.outbox.mark_published_by_event_id, found)
        if changed:
            OUTBOX_RECOVERED.labels(self.service).inc(changed)
            log.info(
                "outbox events already on the broker were not published again",
                extra={"events": changed},
            )
        return changed

    async def _event_ids_since(self, name: str, since: float, wanted: set[str]) -> list[str]:
        message_cls = EVENT_TYPES[topic_entry(name).message]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            client_id=f"{self.client_id}-outbox-reconcile",
            isolation_level="read_committed",
        )
        await consumer.start()
        found: list[str] = []
        try:
            partitions = await partitions_of(self.bootstrap_servers, name)
            tps = [TopicPartition(name, p) for p in partitions]
            if not tps:
                return found
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
            remaining = set()
            for tp in tps:
                start = starts.get(tp)
                if start is None or start.offset >= ends[tp]:
                    continue
                consumer.seek(tp, start.offset)
                remaining.add(tp)
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        try:
                            event_id = message_cls.FromString(record.value or b"").meta.event_id
                        except DecodeError:
                            continue
                        if event_id in wanted:
                            found.append(event_id)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return found


async def _stop_quietly(producer: EventProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception as exc:
        log.debug("producer stop failed", extra={"error": type(exc).__name__})
