"""Sampling decided once at the root, honoured by every hop whether it exports or not;
trace ids in log lines; stored traceparents read back safely."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from trailerlink_common.logs import JsonFormatter
from trailerlink_common.tracing import (
    _PropagatingTracer,
    attached,
    current_traceparent,
    sampler_from_env,
    stored_context,
    valid_traceparent,
)

SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
NOT_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
IMAGE = {"dicom.sop_instance_uid": "1.2.826.0.1.3680043.8.498.1"}


def exporting_tracer(
    env: dict[str, str] | None = None,
) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler_from_env(env or {}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def test_only_an_image_entering_starts_a_sampled_trace() -> None:
    tracer, exporter = exporting_tracer()
    with tracer.start_as_current_span(
        "dicom.c-store", kind=SpanKind.SERVER, attributes=IMAGE
    ) as store:
        assert store.get_span_context().trace_flags.sampled
    for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.CLIENT, SpanKind.INTERNAL):
        with tracer.start_as_current_span("heartbeat publish", kind=kind) as span:
            assert not span.get_span_context().trace_flags.sampled
    with tracer.start_as_current_span("POST /files/", kind=SpanKind.SERVER) as span:
        assert not span.get_span_context().trace_flags.sampled
    assert [s.name for s in exporter.get_finished_spans()] == ["dicom.c-store"]


def test_a_hop_follows_the_upstream_decision_whatever_its_own_root_sampler() -> None:
    tracer, exporter = exporting_tracer({"OTEL_TRACES_SAMPLER": "always_off"})
    with tracer.start_as_current_span("consume", context=stored_context(SAMPLED)):
        pass
    with tracer.start_as_current_span("consume", context=stored_context(NOT_SAMPLED)):
        pass
    spans = exporter.get_finished_spans()
    assert len(spans) == 1 and spans[0].parent is not None
    assert f"{spans[0].context.trace_id:032x}" == SAMPLED.split("-")[1]


def test_ratio_sampling_applies_to_roots_only() -> None:
    tracer, _ = exporting_tracer(
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    )
    with tracer.start_as_current_span(
        "dicom.c-store", kind=SpanKind.SERVER, attributes=IMAGE
    ) as root:
        assert not root.get_span_context().trace_flags.sampled
    with tracer.start_as_current_span("x", context=stored_context(SAMPLED)) as child:
        assert child.get_span_context().trace_flags.sampled


def test_a_hop_that_exports_nothing_passes_the_context_through_unchanged() -> None:
    tracer = _PropagatingTracer(sampler_from_env({}))
    with attached(SAMPLED), tracer.start_as_current_span("codec.seal") as span:
        assert not span.is_recording()
        assert current_traceparent() == SAMPLED  # the sampled flag survives this hop
    with attached(NOT_SAMPLED), tracer.start_as_current_span("codec.seal"):
        assert current_traceparent() == NOT_SAMPLED


def test_a_gateway_that_exports_nothing_still_starts_one_sampled_trace() -> None:
    tracer = _PropagatingTracer(sampler_from_env({}))
    with tracer.start_as_current_span(
        "dicom.c-store", kind=SpanKind.SERVER, attributes=IMAGE
    ) as store:
        assert store.get_span_context().is_valid
        assert store.get_span_context().trace_flags.sampled
        stored = current_traceparent()
    with tracer.start_as_current_span("heartbeat publish", kind=SpanKind.PRODUCER) as beat:
        assert not beat.get_span_context().trace_flags.sampled
    assert valid_traceparent(stored) == stored


def test_stored_context_never_borrows_the_callers_trace() -> None:
    with attached(SAMPLED):
        assert current_traceparent() == SAMPLED
        with attached(""):
            assert current_traceparent() == ""
        with attached("garbage"):
            assert current_traceparent() == ""


def test_valid_traceparent_accepts_only_the_w3c_form() -> None:
    assert valid_traceparent(SAMPLED) == SAMPLED
    for bad in ("", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "x" * 300, "00-abc-def-01"):
        assert valid_traceparent(bad) == ""


def test_log_lines_inside_a_span_carry_its_ids_and_no_others_do() -> None:
    formatter = JsonFormatter("test")
    record = logging.makeLogRecord({"msg": "object sealed", "levelname": "INFO", "name": "t"})
    assert "trace_id" not in json.loads(formatter.format(record))
    # A trace id with a run of ten digits that passes the NHS check is not redacted.
    traceparent = "00-ab9434765919cd43dd8448eb211c8031-b7ad6b7169203331-01"
    with attached(traceparent):
        line = json.loads(formatter.format(record))
    assert line["trace_id"] == "ab9434765919cd43dd8448eb211c8031"
    assert line["span_id"] == "b7ad6b7169203331"


def test_scrapes_health_checks_and_receipt_polls_make_no_spans() -> None:
    """FastAPI makes a SERVER span of every request; only one carrying an image's
    sampled trace (a tus request from the uplink) is kept."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler_from_env({}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI(telemetry={"tracer_provider": provider})
    for path in ("/metrics", "/healthz", "/readyz", "/v1/receipts", "/files/abc"):
        app.add_api_route(path, lambda: {}, methods=["GET"])
    with TestClient(app) as client:
        for path in ("/metrics", "/healthz", "/readyz", "/v1/receipts?after=3", "/files/abc"):
            assert client.get(path).status_code == 200
        assert exporter.get_finished_spans() == ()
        client.get("/files/abc", headers={"traceparent": SAMPLED})
    spans = exporter.get_finished_spans()
    assert spans and {f"{s.context.trace_id:032x}" for s in spans} == {SAMPLED.split("-")[1]}
