"""The shared Kafka plumbing against a real broker: round trips, at-least-once,
dead letters, retry rules and trace context."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import Message
from opentelemetry import trace
from trailerlink_common.tracing import configure_tracing
from trailerlink_events import messages as m
from trailerlink_events import topics
from trailerlink_events.kafka import (
    DLQ_ATTEMPTS,
    DLQ_CONSUMER_GROUP,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_TOPIC,
    EVENT_TYPE_HEADER,
    ConsumerRunner,
    Delivery,
    DependencyUnavailable,
    EventProducer,
    RetryPolicy,
)
from trailerlink_testing.kafka_reader import read_events
from trailerlink_testing.waiting import async_wait_until

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[EventProducer]:
    p = EventProducer(kafka_bootstrap, client_id="test")
    await p.start()
    yield p
    await p.stop()


@asynccontextmanager
async def running(runner: ConsumerRunner) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def make_runner(
    bootstrap: str,
    group: str,
    topic: str,
    handler: Callable[[Delivery], Awaitable[None]],
    producer: EventProducer,
    retry: RetryPolicy = FAST_RETRY,
) -> ConsumerRunner:
    return ConsumerRunner(
        bootstrap_servers=bootstrap,
        group_id=group,
        topics=[topic],
        handler=handler,
        producer=producer,
        dead_letter_topic=topics.dead_letter_topic(topics.topic(topic).site),
        retry=retry,
    )


def example_events(key: str) -> dict[str, Message]:
    """One fully-populated example of each event, keyed to this test."""
    ident = m.ObjectIdentity(
        study_instance_uid=key,
        series_instance_uid="1.2.3.4",
        sop_instance_uid="1.2.3.4.5",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )
    meta = m.new_meta("test", "trailer-test")
    return {
        topics.OBJECT_RECEIVED: m.ObjectReceived(
            meta=meta,
            object=ident,
            calling_ae_title="MODALITY",
            file_size_bytes=27_000_000,
            file_sha256="ab" * 32,
            dataset_sha256="cd" * 32,
            spool_path="a/b.tls",
            received_at=m.timestamp(),
            number_of_frames=1,
            priority=m.Priority.PRIORITY_URGENT,
        ),
        topics.OBJECT_SEALED: m.ObjectSealed(
            meta=meta,
            object=ident,
            sealed_path="x.sealed",
            sealed_size_bytes=11_000_000,
            codec="htj2k+zstd",
            compression_ratio=2.4,
            key_id="dc-2026-1",
        ),
        topics.OBJECT_DELIVERED: m.ObjectDelivered(
            meta=meta,
            object=ident,
            dataset_sha256="cd" * 32,
            pacs_ae_title="PACS",
            storage_committed=True,
        ),
        topics.OBJECT_FAILED: m.ObjectFailed(
            meta=meta,
            object=ident,
            reason_code=m.FailureReason.FAILURE_REASON_UID_CONFLICT,
            reason="different content",
            stage="gateway",
        ),
        topics.WORKLIST_CHANGED: m.WorklistChanged(
            meta=meta,
            change=m.WorklistChange.WORKLIST_CHANGE_CANCELLED,
            source=m.WorklistSource.WORKLIST_SOURCE_HL7,
            accession_number=key,
        ),
        topics.PROCEDURE_STEP: m.ProcedureStepUpdated(
            meta=meta,
            mpps_sop_instance_uid="1.2.9",
            study_instance_uid=key,
            status=m.ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
            performed_instances=[
                m.PerformedInstance(sop_instance_uid=f"1.2.9.{i}") for i in range(4)
            ],
        ),
        topics.DEMOGRAPHICS_CORRECTION: m.DemographicsCorrection(
            meta=meta,
            correction_id="c1",
            accession_number=key,
            corrected_family_name="TEST",
            corrected_by="radiographer-1",
            reason="typo",
        ),
        topics.HEARTBEAT: m.Heartbeat(
            meta=meta,
            sequence=7,
            backlog_objects=3,
            backlog_bytes=99,
            link_state=m.LinkState.LINK_STATE_UP,
            versions={"gateway": "0.1.0"},
        ),
        topics.CENTRAL_UPLOAD_COMPLETED: m.UploadCompleted(meta=meta, upload_id="u1", object=ident),
    }


async def test_every_event_type_round_trips(
    kafka_bootstrap: str, producer: EventProducer, unique_group: str
) -> None:
    key = f"1.2.826.0.1.{uuid.uuid4().int % 10**12}"
    sent = example_events(key)
    for topic, event in sent.items():
        await producer.publish(topic, key, event)
    for topic, event in sent.items():
        got = await read_events(
            kafka_bootstrap, topic, until=lambda ds: len(ds) >= 1, match=lambda d: d.key == key
        )
        assert got[0].event == event, topic
        assert got[0].headers[EVENT_TYPE_HEADER].decode() == event.DESCRIPTOR.full_name


async def test_publish_refuses_the_wrong_event_for_a_topic(producer: EventProducer) -> None:
    with pytest.raises(ValueError, match="carries"):
        await producer.publish(topics.OBJECT_SEALED, "k", m.Heartbeat())


async def committed_offset(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_failing_handler_is_redelivered_after_restart_and_nothing_committed_past_it(
    kafka_bootstrap: str, producer: EventProducer, unique_group: str
) -> None:
    key = f"trailer-{uuid.uuid4().hex[:8]}"
    offsets = []
    for seq in (1, 2, 3):
        await producer.publish(
            topics.HEARTBEAT, key, m.Heartbeat(meta=m.new_meta("t", key), sequence=seq)
        )
    got = await read_events(
        kafka_bootstrap,
        topics.HEARTBEAT,
        until=lambda ds: len(ds) == 3,
        match=lambda d: d.key == key,
    )
    offsets = [d.offset for d in got]

    handled: list[int] = []
    failing_attempts = 0

    async def crashing(d: Delivery) -> None:
        nonlocal failing_attempts
        if d.key != key:
            return
        if d.event.sequence == 2:
            failing_attempts += 1
            raise RuntimeError("side effect not finished")
        handled.append(d.event.sequence)

    slow_retry = RetryPolicy(
        max_attempts=1000, initial_backoff_seconds=0.05, max_backoff_seconds=0.1
    )
    runner = make_runner(
        kafka_bootstrap, unique_group, topics.HEARTBEAT, crashing, producer, slow_retry
    )
    async with running(runner):
        await async_wait_until(
            lambda: asyncio.sleep(0, failing_attempts >= 3),
            30,
            "the second record to fail repeatedly",
        )
    assert handled == [1]
    tp = TopicPartition(topics.HEARTBEAT, 0)
    assert await committed_offset(kafka_bootstrap, unique_group, tp) == offsets[1]

    async def healthy(d: Delivery) -> None:
        if d.key == key:
            handled.append(d.event.sequence)

    runner = make_runner(kafka_bootstrap, unique_group, topics.HEARTBEAT, healthy, producer)
    async with running(runner):
        await async_wait_until(
            lambda: asyncio.sleep(0, len(handled) >= 3), 30, "redelivery after restart"
        )
    assert handled == [1, 2, 3]
    assert await committed_offset(kafka_bootstrap, unique_group, tp) >= offsets[2] + 1


async def test_cancelled_handler_commits_nothing(
    kafka_bootstrap: str, producer: EventProducer, unique_group: str
) -> None:
    """A process that dies mid-handler (here: the task is cancelled) leaves the record
    uncommitted, so the next consumer of the group gets it again."""
    key = f"trailer-{uuid.uuid4().hex[:8]}"
    await producer.publish(topics.HEARTBEAT, key, m.Heartbeat(meta=m.new_meta("t", key)))
    entered = asyncio.Event()

    async def hangs(d: Delivery) -> None:
        if d.key == key:
            entered.set()
            await asyncio.Event().wait()

    runner = make_runner(kafka_bootstrap, unique_group, topics.HEARTBEAT, hangs, producer)
    task = asyncio.create_task(runner.run(asyncio.Event()))
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    seen: list[str] = []

    async def records(d: Delivery) -> None:
        if d.key == key:
            seen.append(d.key)

    async with running(
        make_runner(kafka_bootstrap, unique_group, topics.HEARTBEAT, records, producer)
    ):
        await async_wait_until(lambda: asyncio.sleep(0, bool(seen)), 30, "redelivery")


async def test_poison_message_goes_to_dead_letter_and_partition_keeps_flowing(
    kafka_bootstrap: str, producer: EventProducer, unique_group: str
) -> None:
    key = f"1.2.826.0.1.{uuid.uuid4().int % 10**12}"
    await producer.publish_raw(
        topics.OBJECT_RECEIVED,
        key.encode(),
        b"\xff\xff not a protobuf",
        [(EVENT_TYPE_HEADER, b"trailerlink.events.v1.ObjectReceived")],
    )
    good = m.ObjectReceived(
        meta=m.new_meta("t", "trailer-test"),
        object=m.ObjectIdentity(study_instance_uid=key, sop_instance_uid="9.9"),
    )
    await producer.publish(topics.OBJECT_RECEIVED, key, good)
    handled: list[Message] = []

    async def handler(d: Delivery) -> None:
        if d.key == key:
            handled.append(d.event)

    async with running(
        make_runner(kafka_bootstrap, unique_group, topics.OBJECT_RECEIVED, handler, producer)
    ):
        await async_wait_until(lambda: asyncio.sleep(0, bool(handled)), 30, "the good record")
    assert handled == [good]
    dead = await read_events(
        kafka_bootstrap,
        topics.TRAILER_DEAD_LETTER,
        until=lambda ds: len(ds) >= 1,
        match=lambda d: d.key == key,
    )
    headers = dead[0].headers
    assert headers[DLQ_SOURCE_TOPIC].decode() == topics.OBJECT_RECEIVED
    assert b"does not parse" in headers[DLQ_REASON]
    assert headers[DLQ_ATTEMPTS] == b"1"
    assert headers[DLQ_CONSUMER_GROUP].decode() == unique_group
    assert int(headers[DLQ_SOURCE_OFFSET]) >= 0


async def test_handler_that_keeps_failing_is_dead_lettered_after_max_attempts(
    kafka_bootstrap: str, producer: EventProducer, unique_group: str
) -> None:
    key = f"1.2.826.0.2.{uuid.uuid4().int % 10**12}"
    for n in (1, 2):
        await producer.publish(
            topics.OBJECT_SEALED,
            key,
            m.ObjectSealed(
                meta=m.new_meta("t", "trailer-test"),
                sealed_size_bytes=n,
                object=m.ObjectIdentity(study_instance_uid=key),
            ),
        )
    attempts: list[int] = []
    handled: list[int] = []

    async def handler(d: Delivery) -> None:
        if d.key != key:
            return
        if d.event.sealed_size_bytes == 1:
            attempts.append(d.attempt)
            raise ValueError("cannot seal this one")
        handled.append(d.event.sealed_size_bytes)

    async with running(
        make_runner(kafka_bootstrap, unique_group, topics.OBJECT_SEALED, handler, producer)
    ):
        await async_wait_until(lambda: asyncio.sleep(0, bool(handled)), 30, "the next record")
    assert attempts == [1, 2, 3]
    dead = await read_events(
        kafka_bootstrap,
        topics.TRAILER_DEAD_LETTER,
        until=lambda ds: len(ds) >= 1,
        match=lambda d: d.key == key,
    )
    assert dead[0].headers[DLQ_ATTEMPTS] == b"3"
    assert dead[0].headers[DLQ_REASON].startswith(b"ValueError: cannot seal this one")


async def test_unavailable_dependency_is_retried_beyond_max_attempts_not_dead_lettered(
    kafka_bootstrap: str, producer: EventProducer, unique_group: str
) -> None:
    key = f"1.2.826.0.3.{uuid.uuid4().int % 10**12}"
    await producer.publish(
        topics.OBJECT_SEALED,
        key,
        m.ObjectSealed(
            meta=m.new_meta("t", "trailer-test"), object=m.ObjectIdentity(study_instance_uid=key)
        ),
    )
    attempts: list[int] = []

    async def handler(d: Delivery) -> None:
        if d.key != key:
            return
        attempts.append(d.attempt)
        if len(attempts) <= 5:
            raise DependencyUnavailable("spool disk not mounted")

    async with running(
        make_runner(kafka_bootstrap, unique_group, topics.OBJECT_SEALED, handler, producer)
    ):
        await async_wait_until(lambda: asyncio.sleep(0, len(attempts) >= 6), 60, "success")
    assert attempts == [1, 2, 3, 4, 5, 6]
    dead = await read_events(
        kafka_bootstrap,
        topics.TRAILER_DEAD_LETTER,
        timeout=3,
        until=lambda ds: True,
        match=lambda d: d.key == key,
    )
    assert dead == []


async def test_trace_context_survives_produce_and_consume(
    kafka_bootstrap: str, producer: EventProducer, unique_group: str
) -> None:
    configure_tracing("test")
    tracer = trace.get_tracer("test")
    key = f"trailer-{uuid.uuid4().hex[:8]}"
    with tracer.start_as_current_span("c-store") as root:
        await producer.publish(topics.HEARTBEAT, key, m.Heartbeat(meta=m.new_meta("t", key)))
        root_context = root.get_span_context()
    seen: list[trace.SpanContext] = []

    async def handler(d: Delivery) -> None:
        if d.key == key:
            seen.append(trace.get_current_span().get_span_context())

    async with running(
        make_runner(kafka_bootstrap, unique_group, topics.HEARTBEAT, handler, producer)
    ):
        await async_wait_until(lambda: asyncio.sleep(0, bool(seen)), 30, "the record")
    assert seen[0].trace_id == root_context.trace_id
    # Nothing exports here, so the context passes through unchanged (no span ids that
    # no backend will ever hold): the next hop that exports hangs from the last exported.
    assert seen[0].span_id == root_context.span_id
    assert seen[0].trace_flags == root_context.trace_flags


async def test_one_batch_mixing_inline_and_full_paths_keeps_order_attempts_and_traces(
    kafka_bootstrap: str, producer: EventProducer, unique_group: str
) -> None:
    """The runner handles a record whose upstream trace is not sampled inline, and the
    rest (no trace context, a sampled trace, a first try that raised) the full way. In
    one partition batch they must still be handled in order, retried with the right
    attempt numbers, each in its own trace, and committed past the last one."""
    key = f"trailer-{uuid.uuid4().hex[:8]}"
    trace_ids = {seq: uuid.uuid4().int or 1 for seq in range(1, 7)}

    def traceparent(seq: int, flags: str) -> list[tuple[str, bytes]]:
        value = f"00-{trace_ids[seq]:032x}-{seq:016x}-{flags}"
        return [("traceparent", value.encode())]

    plans = {  # sequence: trace headers
        1: traceparent(1, "00"),  # inline
        2: [],  # no trace context: a span (and a trace) of its own
        3: traceparent(3, "01"),  # sampled: a span in that trace
        4: traceparent(4, "00"),  # inline, first try raises, the retry succeeds
        5: traceparent(5, "00"),  # inline, always raises: dead letter after 3 tries
        6: traceparent(6, "00"),  # inline, after the dead letter: the partition flows on
    }
    for seq, trace_headers in plans.items():
        event = m.Heartbeat(meta=m.new_meta("t", key), sequence=seq)
        await producer.publish_raw(
            topics.HEARTBEAT,
            key.encode(),
            event.SerializeToString(),
            [(EVENT_TYPE_HEADER, b"trailerlink.events.v1.Heartbeat"), *trace_headers],
        )
    handled: list[int] = []
    attempts: dict[int, list[int]] = {}
    seen_trace: dict[int, int] = {}
    partition_offsets: list[tuple[int, int]] = []

    async def handler(d: Delivery) -> None:
        if d.key != key:
            return
        seq = d.event.sequence
        attempts.setdefault(seq, []).append(d.attempt)
        seen_trace[seq] = trace.get_current_span().get_span_context().trace_id
        if seq == 5 or (seq == 4 and d.attempt == 1):
            raise RuntimeError(f"record {seq} fails")
        handled.append(seq)
        partition_offsets.append((d.partition, d.offset))

    async with running(
        make_runner(kafka_bootstrap, unique_group, topics.HEARTBEAT, handler, producer)
    ):
        await async_wait_until(lambda: asyncio.sleep(0, 6 in handled), 30, "the last record")
        tp = TopicPartition(topics.HEARTBEAT, partition_offsets[-1][0])
        last = partition_offsets[-1][1]

        async def committed_past_last() -> bool:
            return (await committed_offset(kafka_bootstrap, unique_group, tp) or 0) > last

        await async_wait_until(committed_past_last, 30, "the commit past the last record")
    assert handled == [1, 2, 3, 4, 6]
    assert attempts == {1: [1], 2: [1], 3: [1], 4: [1, 2], 5: [1, 2, 3], 6: [1]}
    for seq in (1, 3, 4, 5, 6):
        assert seen_trace[seq] == trace_ids[seq], seq
    assert seen_trace[2] not in trace_ids.values()
    dead = await read_events(
        kafka_bootstrap,
        topics.TRAILER_DEAD_LETTER,
        until=lambda ds: len(ds) >= 1,
        match=lambda d: d.key == key,
    )
    assert len(dead) == 1
    assert dead[0].headers[DLQ_ATTEMPTS] == b"3"
    assert dead[0].headers[DLQ_REASON] == b"RuntimeError: record 5 fails"
