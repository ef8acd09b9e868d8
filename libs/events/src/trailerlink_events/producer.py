"""The event producer: :class:`EventProducer` publishes with ``acks=all`` and
idempotence, checks the event type against the topic registry and carries W3C trace
context in record headers.

Kept apart from the consumer because most of what publishes is not a consumer (the
ingest and gateway request paths, the monitor's API, tools and benchmarks); the
consumer uses it only to write dead letters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from google.protobuf.message import Message
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from trailerlink_common.stopping import sleep_or_stop

from trailerlink_events.headers import EVENT_TYPE_HEADER
from trailerlink_events.messages import event_type_name
from trailerlink_events.topics import topic
from trailerlink_events.tracing import _trace_headers, tracer

# The logger keeps the name it had when all of this was one module: log lines carry it
# (the "logger" field) and whatever reads them goes on matching.
log = logging.getLogger("trailerlink_events.kafka")

MESSAGES_PRODUCED = Counter(
    "trailerlink_kafka_messages_produced_total", "Records published", ["topic"]
)


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
