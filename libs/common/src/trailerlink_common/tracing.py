"""OpenTelemetry set-up: one tracer provider per process, exporter chosen by settings.

Span attributes carry UIDs, sizes and outcomes — never patient data. Trace context
crosses Kafka in record headers (trailerlink_events.kafka) and HTTP in the standard
``traceparent`` header.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_configured = False


def configure_tracing(service: str, exporter: str = "none", version: str = "") -> None:
    """Install the global tracer provider once. ``exporter``: none, otlp or console.

    With ``none`` spans are still created (so context propagates between services)
    but not exported anywhere.
    """
    global _configured
    if _configured:
        return
    resource = Resource.create(
        {"service.name": f"trailerlink-{service}", "service.version": version}
    )
    if exporter == "none":
        # Nothing would read the spans, so none are recorded; ids are still made and
        # propagated, so a trace stays whole across hops that do export. Recording
        # every span cost the Kafka consumer two thirds of its throughput.
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    else:
        # Sampling follows the standard OTEL_TRACES_SAMPLER* variables (default:
        # parent-based, always on).
        provider = TracerProvider(resource=resource)
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


def shutdown_tracing() -> None:
    """Flush spans still buffered (called on SIGTERM)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()
