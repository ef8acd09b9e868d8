"""Consumer-group rebalances while records are in flight, against the real broker: members
join and leave a group on a 12-partition topic (ingest replicas scaling, one dying) while
a stream is published and slow handlers run. No member's runner may end on a partition
taken from it mid-batch (a commit or a position for a partition no longer assigned), and
every record is handled at least once."""

from __future__ import annotations

import asyncio
import uuid

from trailerlink_events import topics
from trailerlink_events.kafka import ConsumerRunner, Delivery, EventProducer, RetryPolicy
from trailerlink_events.messages import UploadCompleted, new_meta
from trailerlink_testing.waiting import async_wait_until

TOPIC = topics.CENTRAL_UPLOAD_COMPLETED
EVENTS = 600


async def test_members_joining_and_leaving_mid_batch_lose_nothing_and_survive(
    kafka_bootstrap: str,
) -> None:
    group = f"rebalance-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex[:8]
    producer = EventProducer(kafka_bootstrap, client_id="test-rebalance")
    await producer.start()
    handled: set[str] = set()

    async def handle(delivery: Delivery) -> None:
        if delivery.event.upload_id.startswith(run_id):
            await asyncio.sleep(0.03)  # a handler's own work (the ingest: seconds): long batches
            handled.add(delivery.event.upload_id)

    def member() -> tuple[asyncio.Event, asyncio.Task[None]]:
        runner = ConsumerRunner(
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            topics=[TOPIC],
            handler=handle,
            producer=producer,
            dead_letter_topic=topics.CENTRAL_DEAD_LETTER,
            retry=RetryPolicy(max_attempts=3, initial_backoff_seconds=0.01),
            max_batch_records=100,
        )
        stop = asyncio.Event()
        return stop, asyncio.create_task(runner.run(stop))

    members = [member()]
    sent: list[str] = []

    async def publish(first: int, count: int) -> None:
        for n in range(first, first + count):
            upload_id = f"{run_id}-{n}"
            event = UploadCompleted(
                meta=new_meta("ingest", "trailer-rebalance"), upload_id=upload_id
            )
            await producer.publish(TOPIC, f"object-{n}", event)
            sent.append(upload_id)

    try:
        step = EVENTS // 6
        for round_ in range(6):
            await publish(round_ * step, step)
            if round_ in (0, 1, 3):
                members.append(member())  # a replica scales in: the group rebalances
            else:
                stop, task = members.pop(0)  # one leaves (scale-in, or a rolling restart)
                stop.set()
                await asyncio.wait_for(task, 60)
            await async_wait_until(
                _now(lambda: len(handled) >= len(sent) // 2), 60, "the group consuming"
            )
        await async_wait_until(
            _now(lambda: handled >= set(sent)), 120, "every record handled at least once"
        )
        ended = [t for _, t in members if t.done()]
        assert ended == [], [t.exception() for t in ended]
    finally:
        for stop, _ in members:
            stop.set()
        results = await asyncio.gather(*(t for _, t in members), return_exceptions=True)
        await producer.stop()
    assert [r for r in results if isinstance(r, BaseException)] == []


def _now(condition):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bool(condition())

    return check


async def test_a_member_whose_partitions_moved_mid_batch_carries_on(kafka_bootstrap: str) -> None:
    """The race made certain: member A holds a batch (its handler waits on a gate) while
    B joins and the group gives B part of A's partitions; then A finishes the batch and
    commits. Offsets for partitions A no longer holds cannot be committed (aiokafka
    raises IllegalStateError): A must drop them and carry on, B handles those records."""
    group = f"moved-{uuid.uuid4().hex[:8]}"
    run_id = uuid.uuid4().hex[:8]
    producer = EventProducer(kafka_bootstrap, client_id="test-moved")
    await producer.start()
    gate, holding = asyncio.Event(), asyncio.Event()
    handled: dict[str, set[str]] = {"a": set(), "b": set()}

    def handler(name: str):  # type: ignore[no-untyped-def]
        async def handle(delivery: Delivery) -> None:
            if not delivery.event.upload_id.startswith(run_id):
                return
            if name == "a":
                holding.set()
                await gate.wait()
            handled[name].add(delivery.event.upload_id)

        return handle

    def member(name: str) -> tuple[ConsumerRunner, asyncio.Event, asyncio.Task[None]]:
        runner = ConsumerRunner(
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            topics=[TOPIC],
            handler=handler(name),
            producer=producer,
            dead_letter_topic=topics.CENTRAL_DEAD_LETTER,
        )
        stop = asyncio.Event()
        return runner, stop, asyncio.create_task(runner.run(stop))

    sent = []
    for n in range(48):
        upload_id = f"{run_id}-{n}"
        event = UploadCompleted(meta=new_meta("ingest", "trailer-moved"), upload_id=upload_id)
        await producer.publish(TOPIC, f"object-{run_id}-{n}", event)
        sent.append(upload_id)
    _, stop_a, task_a = member("a")
    await asyncio.wait_for(holding.wait(), 60)  # A alone holds every partition, mid-batch
    b, stop_b, task_b = member("b")
    try:
        # B is given partitions only once A has rejoined, A's batch still held at the gate.
        await async_wait_until(
            _now(lambda: b._consumer is not None and len(b._consumer.assignment()) > 0),
            60,
            "the group moving partitions to B",
        )
        assert not handled["a"]
        gate.set()
        await async_wait_until(
            _now(lambda: handled["a"] | handled["b"] >= set(sent)),
            60,
            "every record handled by one member or the other",
        )
        assert not task_a.done(), task_a.exception()
        assert handled["b"], "B handled none of the records of the partitions it was given"
    finally:
        gate.set()
        stop_a.set()
        stop_b.set()
        results = await asyncio.gather(task_a, task_b, return_exceptions=True)
        await producer.stop()
    assert [r for r in results if isinstance(r, BaseException)] == []
