"""Dead-letter administration: list, show, replay and discard a site's dead letters.

The dead-letter topic is append-only and kept forever, so nothing is removed from it.
A *replay* publishes the record's original key, value and headers (without the
``trailerlink-dlq-*`` ones) to its source topic; a *discard* only records who discarded
it and why. Both go into an audit store (SQLite, ``synchronous=FULL``) before the call
returns, and :meth:`DeadLetters.list` hides entries that were acted on unless asked.
An entry's id is ``<partition>:<offset>`` of the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from trailerlink_common.sqlite import open_durable_sqlite

from trailerlink_events.kafka import (
    DLQ_ATTEMPTS,
    DLQ_CONSUMER_GROUP,
    DLQ_FAILED_AT,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    EVENT_TYPE_HEADER,
    EventProducer,
    _headers_to_dict,
)
from trailerlink_events.topics import topic as topic_spec

REPLAYED = "replayed"
DISCARDED = "discarded"
PENDING = "pending"
REPLAYED_FROM_HEADER = "trailerlink-replayed-from"
_READ_TIMEOUT_SECONDS = 20.0


class UnknownEntry(LookupError):
    """No dead letter has this id."""


class AlreadyDone(ValueError):
    """The entry was discarded already; it cannot be replayed or discarded again."""


def parse_id(entry_id: str) -> tuple[int, int]:
    """``"<partition>:<offset>"`` as two ints; ``ValueError`` otherwise."""
    partition, sep, offset = entry_id.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"dead-letter id must be <partition>:<offset>, not {entry_id!r}")
    return int(partition), int(offset)


@dataclass(frozen=True, slots=True)
class Action:
    entry_id: str
    action: str
    actor: str
    reason: str
    at: float


@dataclass(slots=True)
class Entry:
    """One dead letter as support sees it: identities and reasons, never the payload."""

    id: str
    topic: str
    key: str
    event_type: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    consumer_group: str
    reason: str
    attempts: int | None
    failed_at: str
    value_bytes: int
    status: str = PENDING
    actions: list[dict[str, object]] | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _int(value: bytes | None) -> int | None:
    try:
        return int(value.decode()) if value is not None else None
    except ValueError:
        return None


def _entry(record: ConsumerRecord) -> Entry:
    headers = _headers_to_dict(record.headers)

    def text(name: str) -> str:
        return headers.get(name, b"").decode("utf-8", "replace")

    return Entry(
        id=f"{record.partition}:{record.offset}",
        topic=record.topic,
        key=(record.key or b"").decode("utf-8", "replace"),
        event_type=text(EVENT_TYPE_HEADER),
        source_topic=text(DLQ_SOURCE_TOPIC),
        source_partition=_int(headers.get(DLQ_SOURCE_PARTITION)),
        source_offset=_int(headers.get(DLQ_SOURCE_OFFSET)),
        consumer_group=text(DLQ_CONSUMER_GROUP),
        reason=text(DLQ_REASON),
        attempts=_int(headers.get(DLQ_ATTEMPTS)),
        failed_at=text(DLQ_FAILED_AT),
        value_bytes=len(record.value or b""),
    )


class AuditStore:
    """Replays and discards, durable when a method returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # 5 s: sqlite3's own default, which this store has always had.
        self._db = open_durable_sqlite(path, synchronous="FULL", busy_timeout_seconds=5)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS dlq_actions (topic TEXT NOT NULL, entry_id TEXT NOT NULL,"
            " action TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL)"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS dlq_actions_entry ON dlq_actions (topic, entry_id)"
        )

    def record(self, topic: str, entry_id: str, action: str, actor: str, reason: str) -> Action:
        done = Action(entry_id, action, actor, reason, time.time())
        with self._lock:
            self._db.execute(
                "INSERT INTO dlq_actions VALUES (?, ?, ?, ?, ?, ?)",
                (topic, entry_id, action, actor, reason, done.at),
            )
        return done

    def actions(self, topic: str) -> dict[str, list[Action]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT entry_id, action, actor, reason, at FROM dlq_actions WHERE topic = ?"
                " ORDER BY at",
                (topic,),
            ).fetchall()
        out: dict[str, list[Action]] = {}
        for row in rows:
            out.setdefault(row[0], []).append(Action(*row))
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


async def _close(consumer: AIOKafkaConsumer) -> None:
    # aiokafka's group-less consumer can raise the CancelledError of its own internal
    # task from stop(); only a cancellation of *this* task may propagate.
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def _status(actions: list[Action]) -> str:
    kinds = {a.action for a in actions}
    if DISCARDED in kinds:
        return DISCARDED
    return REPLAYED if REPLAYED in kinds else PENDING


class DeadLetters:
    """One site's dead-letter topic with its audit store."""

    def __init__(
        self, bootstrap_servers: str, topic: str, audit: AuditStore, producer: EventProducer
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.audit = audit
        self.producer = producer

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="dlq-admin",
        )

    def _partitions(self) -> set[int]:
        # The topic registry, not cluster metadata: an unsubscribed consumer has none.
        return set(range(topic_spec(self.topic).partitions))

    def _decorate(self, entry: Entry, actions: list[Action], with_actions: bool) -> Entry:
        entry.status = _status(actions)
        if with_actions:
            entry.actions = [asdict(a) for a in actions]
        return entry

    async def list(self, include_done: bool = False, limit: int = 1000) -> list[Entry]:
        """Entries oldest first per partition; pending only unless ``include_done``."""
        consumer = self._consumer()
        await consumer.start()
        try:
            partitions = self._partitions()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return []
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            begins = await consumer.beginning_offsets(tps)
            for tp in tps:  # explicit: the group-less consumer's reset would be "latest"
                consumer.seek(tp, begins[tp])
            records: list[ConsumerRecord] = []
            remaining = {tp for tp in tps if ends[tp] > 0}
            deadline = time.monotonic() + _READ_TIMEOUT_SECONDS
            while remaining:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.topic} not read to its end in time")
                batches = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, batch in batches.items():
                    records.extend(r for r in batch if r.offset < ends[tp])
                    if batch and batch[-1].offset >= ends[tp] - 1:
                        remaining.discard(tp)
        finally:
            await _close(consumer)
        done = self.audit.actions(self.topic)
        out = []
        for record in records:
            entry = self._decorate(
                _entry(record), done.get(f"{record.partition}:{record.offset}", []), False
            )
            if include_done or entry.status == PENDING:
                out.append(entry)
        return out[:limit]

    async def _record(self, entry_id: str) -> ConsumerRecord:
        partition, offset = parse_id(entry_id)
        consumer = self._consumer()
        await consumer.start()
        try:
            if partition not in self._partitions():
                raise UnknownEntry(entry_id)
            tp = TopicPartition(self.topic, partition)
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            begin = (await consumer.beginning_offsets([tp]))[tp]
            if not begin <= offset < end:
                raise UnknownEntry(entry_id)
            consumer.seek(tp, offset)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                batch = (await consumer.getmany(tp, timeout_ms=1000, max_records=1)).get(tp, [])
                if batch:
                    if batch[0].offset != offset:
                        raise UnknownEntry(entry_id)
                    return batch[0]
            raise TimeoutError(f"dead letter {entry_id} not readable in time")
        finally:
            await _close(consumer)

    async def show(self, entry_id: str) -> Entry:
        """One entry with its audit trail; :class:`UnknownEntry` or ``ValueError`` (bad id)."""
        record = await self._record(entry_id)
        return self._decorate(
            _entry(record), self.audit.actions(self.topic).get(entry_id, []), True
        )

    async def replay(self, entry_id: str, actor: str, reason: str = "") -> Action:
        """Publish the entry to its source topic as it was, then audit it.

        Raises :class:`UnknownEntry`, :class:`AlreadyDone` (discarded) or ``ValueError``
        (bad id, or no source topic recorded). A replay of a replayed entry is allowed:
        the consumers are idempotent, and its cause may have been fixed only now.
        """
        record = await self._record(entry_id)
        actions = self.audit.actions(self.topic).get(entry_id, [])
        if _status(actions) == DISCARDED:
            raise AlreadyDone(f"dead letter {entry_id} was discarded")
        headers = _headers_to_dict(record.headers)
        source = headers.get(DLQ_SOURCE_TOPIC, b"").decode()
        if not source:
            raise ValueError(f"dead letter {entry_id} names no source topic")
        kept = [(k, v) for k, v in (record.headers or ()) if not k.startswith("trailerlink-dlq-")]
        kept.append((REPLAYED_FROM_HEADER, f"{self.topic}/{entry_id}".encode()))
        await self.producer.publish_raw(source, record.key, record.value, kept)
        return self.audit.record(self.topic, entry_id, REPLAYED, actor, reason)

    async def discard(self, entry_id: str, actor: str, reason: str) -> Action:
        """Record that the entry is given up; it stays in the topic, hidden from list."""
        if not reason.strip():
            raise ValueError("a discard needs a reason")
        await self._record(entry_id)
        if _status(self.audit.actions(self.topic).get(entry_id, [])) == DISCARDED:
            raise AlreadyDone(f"dead letter {entry_id} was discarded already")
        return self.audit.record(self.topic, entry_id, DISCARDED, actor, reason.strip())
