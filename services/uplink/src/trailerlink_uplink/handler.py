"""Kafka edge: an ObjectSealed event becomes a durable row in the send queue.

The handler returns (and the consumer commits the offset) only after the row is
fsynced, so from then on the queue, not Kafka's retention, keeps the object alive.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import replace

from trailerlink_common.tracing import current_traceparent
from trailerlink_events.kafka import Delivery, DependencyUnavailable, PermanentError
from trailerlink_events.messages import ObjectSealed
from trailerlink_spool.layout import OutgoingLayout, OutsideLayoutError

from trailerlink_uplink.queue import PRIORITY_ROUTINE, NewObject, SendQueue


def _seconds(ts: object) -> float:
    return ts.seconds + ts.nanos / 1e9 if ts is not None else 0.0  # type: ignore[attr-defined]


def new_object(event: ObjectSealed) -> NewObject:
    """The queue row for an event. Raises PermanentError for an event that can never be
    sent (no identity, no path, a path that leaves the outgoing spool)."""
    ident = event.object
    if not ident.sop_instance_uid or not ident.study_instance_uid:
        raise PermanentError("event lacks the SOP or Study Instance UID")
    if not event.sealed_path or not event.sealed_size_bytes:
        raise PermanentError("event lacks the sealed path or size")
    try:
        sealed_path = OutgoingLayout.checked_sealed_path(event.sealed_path)
    except OutsideLayoutError:
        raise PermanentError("sealed path leaves the outgoing spool") from None
    received = _seconds(event.received_at) if event.HasField("received_at") else 0.0
    sealed = _seconds(event.sealed_at) if event.HasField("sealed_at") else received
    return NewObject(
        sealed_path=sealed_path,
        sop_instance_uid=ident.sop_instance_uid,
        study_instance_uid=ident.study_instance_uid,
        series_instance_uid=ident.series_instance_uid,
        sop_class_uid=ident.sop_class_uid,
        transfer_syntax_uid=ident.transfer_syntax_uid,
        file_sha256=event.file_sha256,
        dataset_sha256=event.dataset_sha256,
        sealed_sha256=event.sealed_sha256,
        sealed_size=int(event.sealed_size_bytes),
        key_id=event.key_id,
        codec=event.codec,
        priority=int(event.priority) or PRIORITY_ROUTINE,
        received_at=received or sealed,
        sealed_at=sealed,
    )


class SealedHandler:
    """``handle(delivery)`` for the object-sealed consumer."""

    def __init__(self, queue: SendQueue, on_enqueued: Callable[[], None]) -> None:
        self.queue = queue
        self.on_enqueued = on_enqueued

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, ObjectSealed):
            raise PermanentError("not an ObjectSealed event")
        # The row keeps the image's trace: its upload, hours later, continues it.
        row = replace(new_object(event), traceparent=current_traceparent())
        try:
            await asyncio.to_thread(self.queue.enqueue, row)
        except (sqlite3.Error, OSError) as exc:
            raise DependencyUnavailable(f"send queue not writable: {type(exc).__name__}") from None
        self.on_enqueued()
