"""The worklist's outbox rows, in its encrypted cache, as the shared outbox's storage.

Events are queued by :meth:`Cache.enqueue` in the same transaction as the change they
announce; :class:`trailerlink_events.outbox.OutboxPublisher` publishes them in order
and, through :class:`CacheOutbox`, deletes each row once the broker acknowledged it.
After an uncertain send or a restart the publisher reads the topics back and deletes
rows whose event (by ``meta.event_id``, read from the decrypted payload) is already
there, so an event is published once, not again.

What differs from the gateway's outbox: the cache's ``outbox`` table has no column for
record headers and the cache has no schema migrations, so no trace context is stored
at enqueue: a record carries the event-type header only.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError
from trailerlink_events.kafka import EVENT_TYPE_HEADER
from trailerlink_events.messages import EVENT_TYPES
from trailerlink_events.outbox import OutboxPublisher, PendingEvent
from trailerlink_events.topics import topic as topic_entry

from trailerlink_worklist import metrics
from trailerlink_worklist.cache import Cache, OutboxItem

# Rows read per pass when looking rows up by event id.
_SCAN_BATCH = 1_000_000


def _event_id(item: OutboxItem) -> str:
    """The event id in a row's payload ("" if the payload is not its topic's event)."""
    try:
        return str(
            EVENT_TYPES[topic_entry(item.topic).message].FromString(item.payload).meta.event_id
        )
    except (DecodeError, KeyError):
        return ""


class CacheOutbox:
    """:class:`~trailerlink_events.outbox.OutboxStore` over :class:`Cache`'s outbox
    table: published rows are deleted. Raises ``IntegrityError`` (from the cache) if a
    payload was altered or moved."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def pending(self, limit: int = 500) -> list[PendingEvent]:
        items = self.cache.outbox_batch(limit)
        metrics.OUTBOX_PENDING.set(len(items))
        return [
            PendingEvent(
                seq=item.id,
                event_id=_event_id(item),
                topic=item.topic,
                key=item.key,
                value=item.payload,
                headers=[(EVENT_TYPE_HEADER, topic_entry(item.topic).message.encode())],
                created_at=item.created_at,
            )
            for item in items
        ]

    def pending_count(self) -> int:
        return self.cache.outbox_size()

    def mark_published(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.cache.outbox_done(list(seqs))

    def mark_published_by_event_id(self, event_ids: Sequence[str]) -> int:
        wanted = {e for e in event_ids if e}
        if not wanted:
            return 0
        ids = [i.id for i in self.cache.outbox_batch(_SCAN_BATCH) if _event_id(i) in wanted]
        self.mark_published(ids)
        return len(ids)


def make_publisher(cache: Cache, bootstrap_servers: str, client_id: str) -> OutboxPublisher:
    """The worklist's outbox publisher (its own producer; looks every 0.2 s, as before)."""
    return OutboxPublisher(
        CacheOutbox(cache),
        bootstrap_servers,
        service="worklist",
        client_id=client_id,
        idle_seconds=0.2,
    )
