"""The send queue keeps each object's trace: its upload and receipts continue the
image's trace however long it waits, and a queue made before rows kept one still opens."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

from trailerlink_common.tracing import attached, current_traceparent
from trailerlink_events.kafka import Delivery
from trailerlink_events.messages import ObjectIdentity, ObjectSealed
from trailerlink_uplink.handler import SealedHandler
from trailerlink_uplink.queue import SendQueue

from .conftest import Outgoing, synthetic_uid

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_row_keeps_the_trace_of_the_event_that_queued_it(tmp_path: Path) -> None:
    queue = SendQueue(tmp_path / "q.sqlite")
    event = ObjectSealed(
        object=ObjectIdentity(sop_instance_uid=synthetic_uid(), study_instance_uid=synthetic_uid()),
        sealed_path="a/b.tlseal",
        sealed_size_bytes=10,
        dataset_sha256="0" * 64,
    )
    handler = SealedHandler(queue, lambda: None)

    async def handle() -> None:
        with attached(TRACEPARENT):
            await handler.handle(Delivery("t", 0, 0, "k", event, {}))

    asyncio.run(handle())
    row = queue.next_object()
    assert row is not None and row.traceparent == TRACEPARENT
    with attached(row.traceparent):
        assert current_traceparent() == TRACEPARENT
    queue.close()


def test_a_queue_made_before_rows_kept_their_trace_opens_and_keeps_its_rows(
    tmp_path: Path, outgoing: Outgoing
) -> None:
    path = tmp_path / "q.sqlite"
    queue = SendQueue(path)
    queue.enqueue(outgoing.sealed(100))
    queue.close()
    with sqlite3.connect(path) as conn:  # the schema of the release before
        conn.execute("ALTER TABLE objects DROP COLUMN traceparent")
    again = SendQueue(path)
    old = again.next_object()
    assert old is not None and old.traceparent is None
    again.enqueue(replace(outgoing.sealed(100), traceparent=TRACEPARENT))
    again.mark_uploaded(old.id)
    new = again.next_object()
    assert new is not None and new.traceparent == TRACEPARENT
    again.close()
