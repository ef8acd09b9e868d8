"""OpenTelemetry set-up: one tracer provider per process, exporter chosen by settings.

One trace per image: the gateway's C-STORE span is the root, and every hop continues
it from the trace context stored with its claim-check hand-off (outbox row, Kafka record
headers, the uplink's send-queue row, the ``traceparent`` header of the tus requests, the
ingest's upload state). Sampling is decided once, at that root, and every other hop
follows its parent's decision (:func:`sampler_from_env`), whether or not it exports.

Span attributes carry UIDs, sizes and outcomes — never patient data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_configured = False
_recording = False
_W3C = TraceContextTextMapPropagator()
IMAGE_ATTRIBUTE = "dicom.sop_instance_uid"
"""The span attribute naming the image a span is about; a root must carry it."""


class EdgeRootSampler(Sampler):
    """Decides whether a span with no parent starts a sampled trace.

    Only an image entering the system starts one: a SERVER span naming the SOP Instance
    it receives (``dicom.sop_instance_uid``: the modality's C-STORE at the gateway), and
    then as ``inner`` says. HTTP requests (FastAPI makes a span of each: scrapes, health
    checks, receipt polls, probes), heartbeats and timers start none, so they never fill
    the backend with traces of their own; a request that carries an image's
    ``traceparent`` (a tus upload) still joins that image's trace.
    """

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is not SpanKind.SERVER or not (attributes or {}).get(IMAGE_ATTRIBUTE):
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"EdgeRootSampler{{{self._inner.get_description()}}}"


def sampler_from_env(environ: Mapping[str, str] | None = None) -> Sampler:
    """Parent-based everywhere; the standard ``OTEL_TRACES_SAMPLER`` (and ``_ARG``) choose
    only how roots are sampled (``always_on``, ``always_off``, ``traceidratio``, with or
    without the ``parentbased_`` prefix). A hop never re-decides a trace it continues."""
    env = os.environ if environ is None else environ
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    root: Sampler = ALWAYS_ON
    match name.removeprefix("parentbased_"):
        case "always_off":
            root = ALWAYS_OFF
        case "traceidratio":
            try:
                ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
            except ValueError:
                ratio = 1.0
            root = TraceIdRatioBased(min(1.0, max(0.0, ratio)))
    return ParentBased(root=EdgeRootSampler(root))


class _PropagatingTracer(trace.Tracer):
    """The tracer of a process that exports nothing: records nothing, costs next to
    nothing, yet keeps every trace whole.

    A span with a parent is the parent's context itself (same ids, same sampled flag),
    so what this hop publishes carries the upstream decision, and the next hop that
    exports hangs its spans from the last span that was exported. A root gets fresh ids
    and the sampler's decision, so a gateway that exports nothing still starts one trace
    per image for the hops that do.
    """

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler
        self._ids = RandomIdGenerator()

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            return trace.NonRecordingSpan(parent)
        trace_id = self._ids.generate_trace_id()
        result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
        flags = TraceFlags(
            TraceFlags.SAMPLED if result.decision.is_sampled() else TraceFlags.DEFAULT
        )
        return trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id,
                self._ids.generate_span_id(),
                is_remote=False,
                trace_flags=flags,
                trace_state=result.trace_state,
            )
        )

    # The API declares its private _AgnosticContextManager (sync and async use); callers
    # here only use `with`, which a generator context manager serves.
    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links)
        with trace.use_span(span, end_on_exit=end_on_exit) as current:
            yield current


class _PropagatingTracerProvider(trace.TracerProvider):
    def __init__(self, sampler: Sampler) -> None:
        self._tracer = _PropagatingTracer(sampler)

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return self._tracer


def configure_tracing(service: str, exporter: str = "none", version: str = "") -> None:
    """Install the global tracer provider once. ``exporter``: none, otlp or console.

    With ``none`` no span is recorded (recording every span cost the Kafka consumer two
    thirds of its throughput) but trace context still flows through this hop unchanged,
    sampled flag included, so the hops after it that export continue the same trace.
    """
    global _configured, _recording
    if _configured:
        return
    sampler = sampler_from_env()
    if exporter == "none":
        trace.set_tracer_provider(_PropagatingTracerProvider(sampler))
        _configured = True
        return
    resource = Resource.create(
        {"service.name": f"trailerlink-{service}", "service.version": version}
    )
    provider = TracerProvider(resource=resource, sampler=sampler)
    span_exporter: SpanExporter | None = None
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()  # configured by the standard OTEL_EXPORTER_OTLP_* vars
    elif exporter == "console":
        span_exporter = ConsoleSpanExporter()
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    _recording = True


def spans_recorded() -> bool:
    """True when this process records (and exports) spans; False: context only passes
    through (hot paths may then skip making spans altogether)."""
    return _recording


def shutdown_tracing() -> None:
    """Flush spans still buffered (called on SIGTERM)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


# --- trace context stored with a claim-check hand-off ------------------------------------


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the current span ('' outside any trace): what a durable
    hand-off (queue row, upload state) keeps so the next step continues the trace."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def valid_traceparent(value: str | None) -> str:
    """``value`` in its canonical form if it is a valid W3C traceparent, else ''."""
    if not value or len(value) > 128:
        return ""
    parent = trace.get_current_span(_W3C.extract({"traceparent": value})).get_span_context()
    if not parent.is_valid:
        return ""
    return f"00-{parent.trace_id:032x}-{parent.span_id:016x}-{int(parent.trace_flags):02x}"


def stored_context(traceparent: str | None) -> otel_context.Context:
    """The context to continue a stored ``traceparent`` in; an empty context (no parent)
    when there is none, never the caller's current one (which may be another object's)."""
    if traceparent:
        extracted = _W3C.extract({"traceparent": traceparent}, context=otel_context.Context())
        if trace.get_current_span(extracted).get_span_context().is_valid:
            return extracted
    return otel_context.Context()


@contextlib.contextmanager
def attached(traceparent: str | None) -> Iterator[None]:
    """Run the block in the trace a stored ``traceparent`` names (or in none)."""
    token = otel_context.attach(stored_context(traceparent))
    try:
        yield
    finally:
        otel_context.detach(token)


def log_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span for a log line ({} outside)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}
