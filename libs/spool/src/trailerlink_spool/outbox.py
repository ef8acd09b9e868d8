"""A transactional outbox: events committed with the state they announce, then
published to Kafka in order, each exactly once.

The producing code adds an event to the ``outbox`` table inside the same SQLite
transaction as its own state change (:meth:`Outbox.add`). :class:`OutboxPublisher`
publishes unpublished rows in sequence order and marks them published. Kafka being
down only delays publication: the rows wait on disk.

Exactly once: a crash (or a failed send whose outcome is unknown) between the broker's
acknowledgement and the ``published`` mark would otherwise publish an event twice.
So whenever publication starts after such an uncertainty, the publisher first reads
the topics back from shortly before the oldest unpublished event and marks the events
it finds there (by ``EventMeta.event_id``) as published.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate
from prometheus_client import Counter, Gauge
from trailerlink_events.kafka import EVENT_TYPE_HEADER, EventProducer
from trailerlink_events.messages import EVENT_TYPES, event_type_name
from trailerlink_events.topics import topic as topic_entry

from trailerlink_spool.db import Database

log = logging.getLogger(__name__)

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        BLOB NOT NULL,
    headers      TEXT NOT NULL,
    created_at   REAL NOT NULL,
    published_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
"""

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
    seq: int
    event_id: str
    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]
    created_at: float


def _current_trace_headers() -> list[tuple[str, bytes]]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


class Outbox:
    """The ``outbox`` table of a :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._published_upto = 0  # every seq <= this is published
        self._cond = threading.Condition()

    def add(self, conn: sqlite3.Connection, item: OutboxEvent) -> int:
        """Add an event inside the caller's open transaction; returns its sequence number.

        Raises ``ValueError`` if the topic does not carry this event type.
        """
        expected = topic_entry(item.topic).message
        name = event_type_name(item.event)
        if name != expected:
            raise ValueError(f"{item.topic} carries {expected}, not {name}")
        event_id = item.event.meta.event_id
        if not event_id:
            raise ValueError("event has no meta.event_id")
        headers = [(EVENT_TYPE_HEADER, name.encode()), *_current_trace_headers(), *item.headers]
        cur = conn.execute(
            "INSERT INTO outbox (event_id, topic, key, value, headers, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                event_id,
                item.topic,
                item.key,
                item.event.SerializeToString(),
                json.dumps([[k, v.decode("latin-1")] for k, v in headers]),
                time.time(),
            ),
        )
        return int(cur.lastrowid or 0)

    def pending(self, limit: int = 500) -> list[PendingEvent]:
        """Unpublished events, oldest first."""
        rows = self.db.query(
            "SELECT seq, event_id, topic, key, value, headers, created_at FROM outbox"
            " WHERE published_at IS NULL ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [
            PendingEvent(
                r["seq"],
                r["event_id"],
                r["topic"],
                r["key"],
                bytes(r["value"]),
                [(k, v.encode("latin-1")) for k, v in json.loads(r["headers"])],
                r["created_at"],
            )
            for r in rows
        ]

    def pending_count(self) -> int:
        return int(self.db.query("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")[0][0])

    def mark_published(self, seqs: Sequence[int]) -> None:
        """Record that these events are on the broker (durable on return)."""
        if not seqs:
            return
        now = time.time()
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET published_at = ? WHERE seq = ?", [(now, s) for s in seqs]
            )
        self._notify()

    def mark_published_by_event_id(self, event_ids: Sequence[str]) -> int:
        """Mark unpublished events with these ids published; returns how many."""
        if not event_ids:
            return 0
        now = time.time()
        with self.db.transaction() as conn:
            changed = 0
            for event_id in event_ids:
                changed += conn.execute(
                    "UPDATE outbox SET published_at = ? WHERE event_id = ?"
                    " AND published_at IS NULL",
                    (now, event_id),
                ).rowcount
        self._notify()
        return changed

    def _notify(self) -> None:
        rows = self.db.query("SELECT MIN(seq) FROM outbox WHERE published_at IS NULL")
        oldest = rows[0][0]
        if oldest is None:
            oldest = int(self.db.query("SELECT COALESCE(MAX(seq), 0) FROM outbox")[0][0]) + 1
        with self._cond:
            self._published_upto = max(self._published_upto, int(oldest) - 1)
            self._cond.notify_all()

    def is_published(self, seq: int) -> bool:
        rows = self.db.query("SELECT published_at FROM outbox WHERE seq = ?", (seq,))
        return bool(rows) and rows[0][0] is not None

    def wait_published(self, seqs: Sequence[int], timeout: float) -> bool:
        """Block (a worker thread) until every event in ``seqs`` is published.

        Returns False if ``timeout`` seconds pass first.
        """
        if not seqs:
            return True
        target = max(seqs)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._published_upto < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._published_upto >= target:
                return True
        return all(self.is_published(s) for s in seqs)


ProducerFactory = Callable[[], Awaitable[EventProducer]]


@dataclass
class OutboxPublisher:
    """Publishes an :class:`Outbox` to Kafka; run ``run(stop)`` as a service task."""

    outbox: Outbox
    bootstrap_servers: str
    service: str
    client_id: str = "trailerlink"
    batch_size: int = 200
    retry_initial_seconds: float = 0.5
    retry_max_seconds: float = 5.0
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
                    await self._idle(stop, 1.0)
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
        them to its current end. Returns how many were found.
        """
        pending = await asyncio.to_thread(self.outbox.pending, 1_000_000)
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
            # consumer.topics() fetches metadata without caching it; ask the client.
            cluster = await consumer._client.fetch_all_metadata()
            partitions = cluster.partitions_for_topic(name) or set()
            tps = [TopicPartition(name, p) for p in sorted(partitions)]
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
