"""The send queue: durable, idempotent, and ordered the way readers need studies."""

from __future__ import annotations

from pathlib import Path

from trailerlink_uplink.queue import (
    PRIORITY_URGENT,
    STATE_DELIVERED,
    STATE_QUEUED,
    STATE_UPLOADED,
    SendQueue,
)

from .conftest import Outgoing, synthetic_uid


def _drain_order(queue: SendQueue) -> list[str]:
    order = []
    while (obj := queue.next_object()) is not None:
        order.append(obj.sop_instance_uid)
        queue.mark_uploaded(obj.id)
    return order


def test_enqueue_is_idempotent_on_the_sealed_path(queue: SendQueue, outgoing: Outgoing) -> None:
    obj = outgoing.sealed(100)
    assert queue.enqueue(obj) is True
    assert queue.enqueue(obj) is False
    assert queue.states() == {STATE_QUEUED: 1}


def test_queue_survives_reopen_with_upload_url(tmp_path: Path, outgoing: Outgoing) -> None:
    path = tmp_path / "q.sqlite"
    q = SendQueue(path)
    obj = outgoing.sealed(100)
    q.enqueue(obj)
    row = q.next_object()
    assert row is not None
    q.set_upload_url(row.id, "http://ingest/files/abc")
    q.close()
    again = SendQueue(path)
    row2 = again.next_object()
    assert row2 is not None and row2.upload_url == "http://ingest/files/abc"
    again.close()


def test_whole_studies_before_the_next_study_oldest_first(
    queue: SendQueue, outgoing: Outgoing
) -> None:
    study_a, study_b = synthetic_uid(), synthetic_uid()
    # Interleaved arrival: A1, B1, A2, B2 — A is older.
    a1 = outgoing.sealed(10, study_a, received_at=100)
    b1 = outgoing.sealed(10, study_b, received_at=200)
    a2 = outgoing.sealed(10, study_a, received_at=101)
    b2 = outgoing.sealed(10, study_b, received_at=201)
    for obj in (b1, a1, b2, a2):
        queue.enqueue(obj)
    order = _drain_order(queue)
    assert order == [
        a1.sop_instance_uid,
        a2.sop_instance_uid,
        b1.sop_instance_uid,
        b2.sop_instance_uid,
    ]


def test_urgent_study_goes_before_older_routine_ones(queue: SendQueue, outgoing: Outgoing) -> None:
    routine = [outgoing.sealed(10, synthetic_uid(), received_at=100 + i) for i in range(3)]
    urgent_study = synthetic_uid()
    urgent = [
        outgoing.sealed(10, urgent_study, priority=PRIORITY_URGENT, received_at=500 + i)
        for i in range(2)
    ]
    for obj in [*routine, *urgent]:
        queue.enqueue(obj)
    order = _drain_order(queue)
    assert order[:2] == [u.sop_instance_uid for u in urgent]
    assert order[2:] == [r.sop_instance_uid for r in routine]


def test_in_flight_objects_are_skipped(queue: SendQueue, outgoing: Outgoing) -> None:
    a = outgoing.sealed(10, received_at=1)
    b = outgoing.sealed(10, received_at=2)
    queue.enqueue(a)
    queue.enqueue(b)
    first = queue.next_object()
    assert first is not None
    second = queue.next_object(exclude=[first.id])
    assert second is not None and second.id != first.id


def test_rows_are_never_removed_and_delivery_is_final(queue: SendQueue, outgoing: Outgoing) -> None:
    obj = outgoing.sealed(10)
    queue.enqueue(obj)
    row = queue.next_object()
    assert row is not None
    queue.mark_uploaded(row.id)
    assert queue.states() == {STATE_UPLOADED: 1}
    queue.mark_delivered(row.id)
    queue.mark_failed(row.id, "late failure receipt")
    queue.requeue(row.id, "late corruption receipt")
    assert queue.states() == {STATE_DELIVERED: 1}
    backlog = queue.backlog()
    assert backlog.objects == 0 and backlog.awaiting_receipt == 0
