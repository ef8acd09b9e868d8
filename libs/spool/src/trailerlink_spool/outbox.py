"""The gateway's transactional outbox: the ``outbox`` table of the spool index.

The producing code adds an event to the ``outbox`` table inside the same SQLite
transaction as its own state change (:meth:`Outbox.add`), with the trace context
current at that moment. The publisher is the shared one,
:class:`trailerlink_events.outbox.OutboxPublisher` (re-exported here with the names
this module always had): it publishes unpublished rows in sequence order, each exactly
once, and this table marks them published (rows are kept, ``published_at`` set). Kafka
being down only delays publication: the rows wait on disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence

from trailerlink_events.kafka import EVENT_TYPE_HEADER
from trailerlink_events.messages import event_type_name
from trailerlink_events.outbox import (
    KAFKA_CONNECTED,
    OUTBOX_PENDING,
    OUTBOX_PUBLISHED,
    OUTBOX_RECOVERED,
    RECONCILE_MARGIN_SECONDS,
    OutboxEvent,
    OutboxPublisher,
    OutboxStore,
    PendingEvent,
    ProducerFactory,
    current_trace_headers,
)
from trailerlink_events.topics import topic as topic_entry

from trailerlink_spool.db import Database

__all__ = [
    "KAFKA_CONNECTED",
    "OUTBOX_PENDING",
    "OUTBOX_PUBLISHED",
    "OUTBOX_RECOVERED",
    "OUTBOX_SCHEMA",
    "RECONCILE_MARGIN_SECONDS",
    "Outbox",
    "OutboxEvent",
    "OutboxPublisher",
    "OutboxStore",
    "PendingEvent",
    "ProducerFactory",
]

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


class Outbox:
    """The ``outbox`` table of a :class:`Database`: an
    :class:`~trailerlink_events.outbox.OutboxStore` whose published rows are kept."""

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
        headers = [(EVENT_TYPE_HEADER, name.encode()), *current_trace_headers(), *item.headers]
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
