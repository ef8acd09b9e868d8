"""W3C trace context in Kafka record headers, and the span a consumed record runs in.

Kept apart from the producer and the consumer, which both use it (the producer injects
the current context into a record's headers; the consumer reads it back and runs the
handler in it), because it is the per-record hot path's most tuned code: the fast
parser of the one ``traceparent`` form our producers write and the lazily parsed
remote parent exist because the library propagator and an eager
:class:`~opentelemetry.trace.SpanContext` were a large share of the consumer's
per-record cost (``tests/test_trace_headers.py`` holds the parser to the library's
answers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from aiokafka import ConsumerRecord
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("trailerlink.kafka")


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
