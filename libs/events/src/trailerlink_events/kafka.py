"""Kafka plumbing, written once: a producer for events and an at-least-once consumer.

Guarantees a service gets from this module:

* :class:`EventProducer` publishes with ``acks=all`` and idempotence, checks the event
  type against the topic registry and carries W3C trace context in record headers.
* :class:`ConsumerRunner` hands each record to the service's handler and commits a
  partition's offset only after the handler returned for every record before it, so a
  crash at any point redelivers rather than loses (handlers must be idempotent).
  A record that keeps failing goes to the site's dead-letter topic with the reason,
  the attempt count and its origin in headers, and the partition moves on.
  On stop, the in-flight record is finished or abandoned uncommitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)
from google.protobuf.message import DecodeError, Message
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Gauge, Histogram
from trailerlink_common.logs import redact_text
from trailerlink_common.stopping import sleep_or_stop
from trailerlink_common.tracing import spans_recorded

from trailerlink_events.messages import EVENT_TYPES, event_type_name
from trailerlink_events.topics import Site, registry, topic, topics_for_site

log = logging.getLogger(__name__)
tracer = trace.get_tracer("trailerlink.kafka")

EVENT_TYPE_HEADER = "trailerlink-event-type"
# Dead-letter headers: why a record was set aside, and where it came from.
DLQ_REASON = "trailerlink-dlq-reason"
DLQ_ATTEMPTS = "trailerlink-dlq-attempts"
DLQ_SOURCE_TOPIC = "trailerlink-dlq-source-topic"
DLQ_SOURCE_PARTITION = "trailerlink-dlq-source-partition"
DLQ_SOURCE_OFFSET = "trailerlink-dlq-source-offset"
DLQ_CONSUMER_GROUP = "trailerlink-dlq-consumer-group"
DLQ_FAILED_AT = "trailerlink-dlq-failed-at"
_REASON_MAX_CHARS = 1000
# Loop turns to give a commit task before handling the next batch: aiokafka writes the
# request on the second (the commit task, then the send it shields); one more for
# margin. Too few only loses the overlap, never a commit.
_COMMIT_SEND_STEPS = 3

MESSAGES_PRODUCED = Counter(
    "trailerlink_kafka_messages_produced_total", "Records published", ["topic"]
)
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


def _headers_to_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    return {k: v for k, v in (headers or ())}


def _trace_headers() -> list[tuple[str, bytes]]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


_TRACE_CONTEXT = TraceContextTextMapPropagator()


def _context_from_headers(headers: Mapping[str, bytes]) -> otel_context.Context | None:
    """The W3C trace context a record carries, or None."""
    traceparent = headers.get("traceparent")
    if traceparent is None:
        return None
    if "tracestate" not in headers:
        fast = _canonical_traceparent(traceparent)
        if fast is not None:
            return fast
    carrier = {"traceparent": traceparent.decode("latin-1")}
    if "tracestate" in headers:
        carrier["tracestate"] = headers["tracestate"].decode("latin-1")
    return _TRACE_CONTEXT.extract(carrier)


_HEX = b"0123456789abcdef"
_ZERO_TRACE_ID = b"0" * 32
_ZERO_SPAN_ID = b"0" * 16


class _RemoteParent(trace.NonRecordingSpan):
    """A record's upstream span, its ids parsed only when something asks for them.

    Most handlers never do (they ask only when they publish or start a span), and
    making the :class:`~opentelemetry.trace.SpanContext` for every record was a large
    share of the runner's per-record cost. The value is validated before this is made,
    so the late parse cannot fail.
    """

    def __init__(self, traceparent: bytes) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self._traceparent = traceparent

    def get_span_context(self) -> trace.SpanContext:
        if self._context is None:
            value = self._traceparent
            self._context = trace.SpanContext(
                int(value[3:35], 16),
                int(value[36:52], 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(int(value[53:55], 16)),
            )
        return self._context


def _canonical_parent(value: bytes) -> tuple[_RemoteParent, bool] | None:
    """(parent span, sampled) for the one form our own producers write (version 00, no
    tracestate); None for anything else, which goes through the library propagator.

    The library propagator validates with regular expressions and cost a fifth of the
    consumer's per-record time.
    """
    if len(value) != 55 or value[:3] != b"00-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    trace_id, span_id, flags = value[3:35], value[36:52], value[53:55]
    if trace_id.strip(_HEX) or span_id.strip(_HEX) or flags.strip(_HEX):
        return None  # not lower-case hex
    if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
        return None
    return _RemoteParent(value), bool(int(flags, 16) & 0x01)


def _canonical_traceparent(value: bytes) -> otel_context.Context | None:
    parent = _canonical_parent(value)
    return None if parent is None else trace.set_span_in_context(parent[0])


@contextlib.contextmanager
def _process_span(
    record: ConsumerRecord, parent: otel_context.Context | None, group_id: str
) -> Iterator[trace.Span]:
    """Run a record's handling in its trace.

    A record whose upstream span was not sampled gets no span of its own (the sampler
    would drop it anyway, and making one per record cost the consumer most of its
    throughput); its context is attached so what the handler publishes stays in the
    same trace.
    """
    if parent is not None:
        parent_span_context = trace.get_current_span(parent).get_span_context()
        if not parent_span_context.trace_flags.sampled:
            token = otel_context.attach(parent)
            try:
                yield trace.get_current_span()
            finally:
                otel_context.detach(token)
            return
    with tracer.start_as_current_span(
        f"{record.topic} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": record.topic,
            "messaging.kafka.destination.partition": record.partition,
            "messaging.kafka.message.offset": record.offset,
            "messaging.consumer.group.name": group_id,
        },
    ) as span:
        yield span


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


class EventProducer:
    """Publishes events to this site's Kafka (acks=all, idempotent, traced)."""

    def __init__(self, bootstrap_servers: str, client_id: str = "trailerlink") -> None:
        self._bootstrap_servers = bootstrap_servers
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect; raises ``KafkaConnectionError`` if no broker answers."""
        # aiokafka binds to the running loop, so the client is made here, not in __init__.
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=30000,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def connect(self, stop: asyncio.Event, max_backoff_seconds: float = 30.0) -> bool:
        """Start, retrying with backoff while Kafka is unreachable.

        Returns True once connected, False if ``stop`` was set first. A service keeps
        running (not ready) meanwhile instead of crashing in a restart loop.
        """
        attempt = 0
        while not stop.is_set():
            try:
                await self.start()
                return True
            except KafkaError as exc:
                attempt += 1
                delay = min(max_backoff_seconds, 0.5 * 2**attempt)
                log.warning(
                    "kafka not reachable; retrying",
                    extra={"error": type(exc).__name__, "retry_in_s": delay},
                )
                await sleep_or_stop(stop, delay)
        return False

    async def stop(self) -> None:
        """Flush pending records and close."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish(
        self,
        topic_name: str,
        key: str,
        event: Message,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Publish ``event``; returns once the broker has it on all in-sync replicas.

        Raises ``ValueError`` if the topic does not carry this event type, and a
        ``KafkaError`` if the broker cannot be reached in time.
        """
        expected = topic(topic_name).message
        name = event_type_name(event)
        if name != expected:
            raise ValueError(f"{topic_name} carries {expected}, not {name}")
        with tracer.start_as_current_span(
            f"{topic_name} publish",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": topic_name},
        ):
            all_headers = [
                (EVENT_TYPE_HEADER, name.encode()),
                *_trace_headers(),
                *headers,
            ]
            await self.publish_raw(topic_name, key.encode(), event.SerializeToString(), all_headers)

    async def publish_raw(
        self,
        topic_name: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        """Publish bytes as they are (dead letters, replays)."""
        if self._producer is None:
            raise KafkaConnectionError("producer not connected")
        await self._producer.send_and_wait(topic_name, value=value, key=key, headers=list(headers))
        MESSAGES_PRODUCED.labels(topic_name).inc()

    async def check_reachable(self) -> None:
        """Readiness check: refresh cluster metadata from a broker."""
        if self._producer is None:
            raise KafkaConnectionError("producer not connected")
        await self._producer.client.force_metadata_update()
        if not self._producer.client.cluster.brokers():
            raise KafkaError("no broker in cluster metadata")


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
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced: another member will get these records again.
            # Handlers are idempotent, so a redelivery is harmless.
            log.warning("offset commit failed after a rebalance; records will be redelivered")

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # nothing fetched from this partition yet
            position = await consumer.position(tp)
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


async def create_topics(
    bootstrap_servers: str, site: Site, replication_factor: int = 1, timeout_s: float = 30
) -> list[str]:
    """Create the registry's topics of ``site`` that do not exist yet; returns those created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics_for_site(site) if t.name not in existing]
        if wanted:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            t.name,
                            t.partitions,
                            replication_factor,
                            topic_configs=t.kafka_configs(),
                        )
                        for t in wanted
                    ],
                    timeout_ms=int(timeout_s * 1000),
                )
            except TopicAlreadyExistsError:
                pass  # another process created them meanwhile
            await _until_served(admin, [t.name for t in wanted], timeout_s)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def _until_served(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """CreateTopics answers once the controller has committed the topics; a broker serves
    their metadata a moment later (KRaft; longer the more partitions). Wait for that, so
    that "created" means a client can use them. Raises TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if all(t["error_code"] == 0 and t["partitions"] for t in described):
            return
        if time.monotonic() > deadline:
            missing = sorted(
                t["topic"] for t in described if t["error_code"] != 0 or not t["partitions"]
            )
            raise TimeoutError(f"topics created but not served: {missing}")
        await asyncio.sleep(0.1)


async def list_topics(bootstrap_servers: str) -> set[str]:
    """Names of the topics the cluster has (an admin call: proves the broker answers)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


__all__ = [
    "ConsumerRunner",
    "Delivery",
    "DependencyUnavailable",
    "EventProducer",
    "PermanentError",
    "RetryPolicy",
    "create_topics",
    "decode_event",
    "list_topics",
    "registry",
]
