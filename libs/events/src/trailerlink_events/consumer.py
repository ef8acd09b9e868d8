"""The at-least-once consumer: :class:`ConsumerRunner` and what a handler deals in.

:class:`ConsumerRunner` hands each record to the service's handler and commits a
partition's offset only after the handler returned for every record before it, so a
crash at any point redelivers rather than loses (handlers must be idempotent). A record
that keeps failing goes to the site's dead-letter topic with the reason, the attempt
count and its origin in headers, and the partition moves on. On stop, the in-flight
record is finished or abandoned uncommitted.

Here too are what a handler sees and raises (:class:`Delivery`,
:class:`PermanentError`, :class:`DependencyUnavailable`), :func:`decode_event`,
:class:`RetryPolicy` and the consumer's metrics. Kept apart from the producer because
it is a different lifecycle (a long-running task per service, not a client shared by
request paths) with its own performance work in the per-record path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from google.protobuf.message import DecodeError, Message
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram
from trailerlink_common.logs import redact_text
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_common.tracing import spans_recorded

from trailerlink_events.headers import (
    DLQ_ATTEMPTS,
    DLQ_CONSUMER_GROUP,
    DLQ_FAILED_AT,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    EVENT_TYPE_HEADER,
    _headers_to_dict,
)
from trailerlink_events.messages import EVENT_TYPES
from trailerlink_events.producer import EventProducer
from trailerlink_events.topics import topic
from trailerlink_events.tracing import _canonical_parent, _context_from_headers, _process_span

# The logger keeps the name it had when all of this was one module: log lines carry it
# (the "logger" field) and whatever reads them goes on matching.
log = logging.getLogger("trailerlink_events.kafka")

_REASON_MAX_CHARS = 1000
# Loop turns to give a commit task before handling the next batch: aiokafka writes the
# request on the second (the commit task, then the send it shields); one more for
# margin. Too few only loses the overlap, never a commit.
_COMMIT_SEND_STEPS = 3

MESSAGES_CONSUMED = Counter(
    "trailerlink_kafka_messages_consumed_total", "Records handled successfully", ["topic"]
)
HANDLER_SECONDS = Histogram(
    "trailerlink_kafka_handler_seconds",
    "Time a handler took for one record (successful attempts)",
    ["topic"],
    buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HANDLER_FAILURES = Counter(
    "trailerlink_kafka_handler_failures_total",
    "Handler attempts that raised, by what happened next (retry or dead_letter)",
    ["topic", "outcome"],
)
DEAD_LETTERS = Counter(
    "trailerlink_kafka_dead_letters_total", "Records sent to a dead-letter topic", ["topic"]
)
CONSUMER_LAG = Gauge(
    "trailerlink_kafka_consumer_lag_records",
    "Records in a partition not yet handled by this consumer group",
    ["topic", "partition"],
)


class PermanentError(Exception):
    """The record can never be handled (bad content): dead-letter it at once."""


class DependencyUnavailable(Exception):
    """Something the handler needs is down (disk, peer). Retry without limit: the
    record is fine and dead-lettering it would only move the problem."""


@dataclass(slots=True)
class Delivery:
    """One record, decoded, as a handler sees it."""

    topic: str
    partition: int
    offset: int
    key: str
    event: Message
    headers: Mapping[str, bytes]
    attempt: int = 1


Handler = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _TopicView:
    """What the per-record path needs to know of a topic, looked up once."""

    message: type[Message] | None
    type_header: bytes


@functools.cache
def _topic_view(topic_name: str) -> _TopicView:
    expected = topic(topic_name).message
    return _TopicView(EVENT_TYPES.get(expected), expected.encode("utf-8"))


@functools.cache
def _topic_metrics(topic_name: str) -> tuple[Counter, Histogram, Counter, Counter]:
    """Metric children of a topic (label lookups are too slow to repeat per record)."""
    return (
        MESSAGES_CONSUMED.labels(topic_name),
        HANDLER_SECONDS.labels(topic_name),
        HANDLER_FAILURES.labels(topic_name, "retry"),
        HANDLER_FAILURES.labels(topic_name, "dead_letter"),
    )


def decode_event(topic_name: str, value: bytes, headers: Mapping[str, bytes]) -> Message:
    """Parse a record's value as the message its topic carries.

    Raises :class:`PermanentError` when the header names another type or the bytes do
    not parse: such a record can never be handled.
    """
    expected = topic(topic_name).message
    named = headers.get(EVENT_TYPE_HEADER, b"").decode("utf-8", "replace")
    if named and named != expected:
        raise PermanentError(f"record is a {named}, topic carries {expected}")
    cls = EVENT_TYPES.get(expected)
    if cls is None:
        raise PermanentError(f"topic {topic_name} carries no decodable event type")
    try:
        return cls.FromString(value)
    except DecodeError as exc:
        raise PermanentError(f"value does not parse as {expected}: {exc}") from None


@dataclass
class RetryPolicy:
    """How often and how fast a failing record is retried before it is dead-lettered."""

    max_attempts: int = 5
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter for the wait after ``attempt``."""
        ceiling = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass
class ConsumerRunner:
    """Consumes ``topics`` as ``group_id`` and hands each record to ``handler``.

    Partitions are handled concurrently, records within a partition in order. Offsets
    are committed after each batch for the records whose handler returned; that commit
    completes while the next batch is handled, and before the runner returns. Use
    ``run(stop_event)`` as a :class:`~trailerlink_common.service.Service` task.
    """

    bootstrap_servers: str
    group_id: str
    topics: Sequence[str]
    handler: Handler
    producer: EventProducer
    dead_letter_topic: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_batch_records: int = 200
    client_id: str = "trailerlink"
    _consumer: AIOKafkaConsumer | None = field(default=None, init=False, repr=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set. Returns after committing what is done."""
        for name in self.topics:
            topic(name)  # KeyError now, not at the first record, for an unknown topic
            # Exported as 0 from the start, so increase() and the alert see the first one.
            _topic_metrics(name)
            DEAD_LETTERS.labels(name)
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            client_id=self.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=self.max_batch_records,
        )
        await self._start_with_retry(consumer, stop)
        if stop.is_set():
            return
        self._consumer = consumer
        # The commit of one batch is in flight while the next batch is handled: a commit
        # is a broker round trip (an offsets write), and waiting for it before handling
        # anything else cost the runner a third of its throughput. Commits stay in
        # order (the next waits for the last) and each covers only handled records.
        commit_in_flight: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=self.max_batch_records)
                if len(batches) == 1:  # no task per batch for the common single partition
                    [(tp, records)] = batches.items()
                    handled = [await self._handle_partition(tp, records, stop)]
                elif batches:
                    handled = await asyncio.gather(
                        *(self._handle_partition(tp, recs, stop) for tp, recs in batches.items())
                    )
                if batches:
                    # A partition is only ever left unfinished when stopping, so what
                    # was not handled is simply not committed and comes back next time.
                    offsets = {tp: nxt for tp, nxt in handled if nxt is not None}
                    if commit_in_flight is not None:
                        await commit_in_flight
                        commit_in_flight = None
                    if offsets:
                        commit_in_flight = asyncio.create_task(self._commit(consumer, offsets))
                        for _ in range(_COMMIT_SEND_STEPS):  # put the request on the wire
                            await asyncio.sleep(0)
                await self._update_lag(consumer)
            if commit_in_flight is not None:
                await commit_in_flight  # stopping: what was handled is committed first
                commit_in_flight = None
        finally:
            if commit_in_flight is not None:
                # Leaving on an error or a cancel: abandon the commit (its records are
                # redelivered, which handlers tolerate) rather than outlive the consumer.
                commit_in_flight.cancel()
                await asyncio.gather(commit_in_flight, return_exceptions=True)
            self._consumer = None
            await consumer.stop()

    async def _start_with_retry(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                await consumer.start()
                return
            except KafkaError as exc:
                attempt += 1
                delay = min(30.0, 0.5 * 2**attempt)
                log.warning(
                    "kafka not reachable; retrying",
                    extra={"error": type(exc).__name__, "retry_in_s": delay},
                )
                await consumer.stop()
                await sleep_or_stop(stop, delay)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        # A rebalance may have moved some of the batch's partitions to another member
        # while it was being handled (a replica joined, left or missed its session):
        # their offsets are no longer ours to commit (aiokafka raises IllegalStateError
        # for them), and the new owner handles those records again from the last
        # committed offset. Handlers are idempotent, so that redelivery is harmless.
        assigned = consumer.assignment()
        kept = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if len(kept) < len(offsets):
            log.warning(
                "partitions moved to another member mid-batch; not committing them",
                extra={"partitions": len(offsets) - len(kept)},
            )
        if not kept:
            return
        try:
            await consumer.commit(kept)
        except (CommitFailedError, IllegalStateError):
            # The group rebalanced as the commit went out: same as above.
            log.warning("offset commit failed after a rebalance; records will be redelivered")

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # nothing fetched from this partition yet
            try:
                position = await consumer.position(tp)
            except IllegalStateError:
                continue  # moved to another member by a rebalance since assignment()
            CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    async def _handle_partition(
        self, tp: TopicPartition, records: list[ConsumerRecord], stop: asyncio.Event
    ) -> tuple[TopicPartition, int | None]:
        """Handle records in order; return the next offset to commit (None: nothing).

        The common record (its upstream trace not sampled, or this process records no
        spans; decodes; handler returns at the first try) is handled inline: one
        coroutine per batch, no span, metrics looked up once. Anything else goes
        through :meth:`_handle_record` (span, retries, dead letter), with a first try
        that raised counted as attempt 1.
        """
        next_offset: int | None = None
        view = _topic_view(tp.topic)
        consumed, seconds, _, _ = _topic_metrics(tp.topic)
        handler, base = self.handler, otel_context.get_current()
        # Not exporting: a sampled record needs no span here either (its context passes
        # through unchanged), so it takes the inline path too.
        spans = spans_recorded()
        done = 0
        try:
            for record in records:
                if stop.is_set():
                    break
                headers = dict(record.headers) if record.headers else {}
                traceparent = headers.get("traceparent")
                parent = (
                    _canonical_parent(traceparent)
                    if traceparent is not None and "tracestate" not in headers
                    else None
                )
                named = headers.get(EVENT_TYPE_HEADER)
                if (
                    parent is None
                    or (parent[1] and spans)  # sampled: this record gets a span of its own
                    or view.message is None
                    or (named and named != view.type_header)
                ):
                    if not await self._handle_record(record, stop, headers):
                        break  # abandoned on stop: neither it nor later records committed
                    next_offset = record.offset + 1
                    continue
                try:
                    event = view.message.FromString(record.value or b"")
                except DecodeError:
                    if not await self._handle_record(record, stop, headers):
                        break
                    next_offset = record.offset + 1
                    continue
                key = (record.key or b"").decode("utf-8", "replace")
                delivery = Delivery(
                    record.topic, record.partition, record.offset, key, event, headers, 1
                )
                # The handler runs in the record's trace, so what it publishes stays in it.
                token = otel_context.attach(trace.set_span_in_context(parent[0], base))
                started = time.perf_counter()
                try:
                    await handler(delivery)
                except Exception as exc:
                    failed: Exception | None = exc
                else:
                    failed = None
                    seconds.observe(time.perf_counter() - started)
                    done += 1
                finally:
                    otel_context.detach(token)
                if failed is not None and not await self._handle_record(
                    record, stop, headers, failed
                ):
                    break
                next_offset = record.offset + 1
        finally:
            if done:
                consumed.inc(done)
        return tp, next_offset

    async def _handle_record(
        self,
        record: ConsumerRecord,
        stop: asyncio.Event,
        headers: dict[str, bytes] | None = None,
        first_failure: Exception | None = None,
    ) -> bool:
        """Handle one record until success or dead letter; False if abandoned on stop.

        ``first_failure``: what the first try (made by the inline path) raised.
        """
        if headers is None:
            headers = _headers_to_dict(record.headers)
        parent = _context_from_headers(headers)
        key = (record.key or b"").decode("utf-8", "replace")
        consumed, seconds, retried, dead_lettered = _topic_metrics(record.topic)
        attempt = 0  # every try, for the handler's information
        failures = 0  # tries that count towards dead-lettering
        while True:
            attempt += 1
            with _process_span(record, parent, self.group_id) as span:
                if first_failure is not None:
                    error: Exception = first_failure
                    first_failure = None
                else:
                    started = time.perf_counter()
                    try:
                        event = decode_event(record.topic, record.value or b"", headers)
                        await self.handler(
                            Delivery(
                                record.topic,
                                record.partition,
                                record.offset,
                                key,
                                event,
                                headers,
                                attempt,
                            )
                        )
                    except Exception as exc:
                        error = exc
                    else:
                        seconds.observe(time.perf_counter() - started)
                        consumed.inc()
                        return True
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                if isinstance(error, PermanentError):
                    dead_lettered.inc()
                    await self._dead_letter(record, headers, str(error), attempt)
                    return True
                if isinstance(error, DependencyUnavailable):
                    retried.inc()
                    delay = self.retry.backoff(min(attempt, 10))
                    log.warning(
                        "dependency unavailable; retrying record",
                        extra={
                            "topic": record.topic,
                            "partition": record.partition,
                            "offset": record.offset,
                            "error": redact_text(str(error)),
                            "retry_in_s": round(delay, 2),
                        },
                    )
                else:
                    failures += 1
                    if failures >= self.retry.max_attempts:
                        dead_lettered.inc()
                        reason = f"{type(error).__name__}: {error}"
                        await self._dead_letter(record, headers, reason, attempt)
                        return True
                    retried.inc()
                    delay = self.retry.backoff(failures)
                    log.warning(
                        "handler failed; retrying record",
                        extra={
                            "topic": record.topic,
                            "partition": record.partition,
                            "offset": record.offset,
                            "attempt": attempt,
                            "error": type(error).__name__,
                            "retry_in_s": round(delay, 2),
                        },
                    )
            if await sleep_or_stop(stop, delay):
                return False  # stopping: abandon, uncommitted, to be redelivered

    async def _dead_letter(
        self, record: ConsumerRecord, headers: Mapping[str, bytes], reason: str, attempts: int
    ) -> None:
        reason = redact_text(reason)[:_REASON_MAX_CHARS]
        log.error(
            "record dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "attempts": attempts,
                "reason": reason,
                "dead_letter_topic": self.dead_letter_topic,
            },
        )
        kept = [(k, v) for k, v in headers.items() if not k.startswith("trailerlink-dlq-")]
        dlq_headers = [
            *kept,
            (DLQ_REASON, reason.encode()),
            (DLQ_ATTEMPTS, str(attempts).encode()),
            (DLQ_SOURCE_TOPIC, record.topic.encode()),
            (DLQ_SOURCE_PARTITION, str(record.partition).encode()),
            (DLQ_SOURCE_OFFSET, str(record.offset).encode()),
            (DLQ_CONSUMER_GROUP, self.group_id.encode()),
            (DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()),
        ]
        # If the dead-letter publish fails, the exception propagates and the record
        # stays uncommitted: it is redelivered rather than dropped.
        await self.producer.publish_raw(
            self.dead_letter_topic, record.key, record.value, dlq_headers
        )
        DEAD_LETTERS.labels(record.topic).inc()
