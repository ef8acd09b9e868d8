"""The worklist's outbox through the shared publisher (trailerlink_events.outbox): rows
in the encrypted cache, deleted once on the broker, and an event the broker already has
(a crash between its acknowledgement and the delete) is not published again."""

from __future__ import annotations

import asyncio

import pytest
from trailerlink_events import topics
from trailerlink_events.kafka import EventProducer
from trailerlink_testing.kafka_reader import read_events
from trailerlink_testing.waiting import ConditionTimeout
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.model import Source
from trailerlink_worklist.outbox import CacheOutbox

from .conftest import booking
from .test_mpps import _uid, completion, create_attrs


def _two_events(app: WorklistApp) -> str:
    first, last = app.worklist.window()
    app.worklist.replace_window([booking(0)], Source.DICOM_MWL, first, last)
    app.cache.outbox_done([i.id for i in app.cache.outbox_batch(1000)])  # the booking's
    uid = _uid()
    app.mpps.create(uid, create_attrs(0))
    app.mpps.update(uid, completion()[0])
    return uid


def test_rows_are_pending_events_with_their_ids(make_app) -> None:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app()
    _two_events(app)
    store = CacheOutbox(app.cache)
    pending = store.pending()
    assert [p.topic for p in pending] == [topics.PROCEDURE_STEP] * 2
    assert all(p.event_id for p in pending) and pending[0].seq < pending[1].seq
    assert pending[0].headers == [
        ("trailerlink-event-type", topics.topic(topics.PROCEDURE_STEP).message.encode())
    ]
    assert store.pending_count() == 2
    assert store.mark_published_by_event_id([pending[1].event_id, "not-there"]) == 1
    assert [p.seq for p in store.pending()] == [pending[0].seq]
    store.mark_published([pending[0].seq])
    assert store.pending() == [] and app.cache.outbox_size() == 0


@pytest.mark.kafka
async def test_an_event_already_on_the_broker_is_not_published_again(
    make_app, kafka_bootstrap: str
) -> None:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app(kafka_bootstrap_servers=kafka_bootstrap)
    uid = _two_events(app)
    # A previous run sent the first event and died before deleting its row.
    first = CacheOutbox(app.cache).pending()[0]
    producer = EventProducer(kafka_bootstrap, client_id="test-crashed-run")
    await producer.start()
    try:
        await producer.publish_raw(first.topic, first.key.encode(), first.value, first.headers)
    finally:
        await producer.stop()

    stop = asyncio.Event()
    task = asyncio.create_task(app.publisher.run(stop))
    try:
        for _ in range(300):
            if app.cache.outbox_size() == 0:
                break
            await asyncio.sleep(0.1)
        assert app.cache.outbox_size() == 0
    finally:
        stop.set()
        await task
    found = await read_events(
        kafka_bootstrap,
        topics.PROCEDURE_STEP,
        until=lambda seen: len(seen) >= 2,
        match=lambda d: d.event.mpps_sop_instance_uid == uid,
    )
    assert found[0].event.meta.event_id == first.event_id
    with pytest.raises(ConditionTimeout, match="2 matching seen"):
        await read_events(
            kafka_bootstrap,
            topics.PROCEDURE_STEP,
            until=lambda seen: len(seen) > 2,
            match=lambda d: d.event.mpps_sop_instance_uid == uid,
            timeout=5,
        )
