"""The fast traceparent path agrees with the OpenTelemetry propagator on every input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from trailerlink_events.kafka import _TRACE_CONTEXT, _context_from_headers

hex_chars = st.sampled_from("0123456789abcdef")


def library(value: str) -> trace.SpanContext:
    return trace.get_current_span(_TRACE_CONTEXT.extract({"traceparent": value})).get_span_context()


def ours(value: str) -> trace.SpanContext:
    context = _context_from_headers({"traceparent": value.encode("latin-1")})
    return trace.get_current_span(context).get_span_context()


@given(
    trace_id=st.integers(0, 2**128 - 1),
    span_id=st.integers(0, 2**64 - 1),
    flags=st.integers(0, 255),
)
def test_canonical_values_match_the_library(trace_id: int, span_id: int, flags: int) -> None:
    value = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert ours(value) == library(value)


@given(st.text(alphabet=st.sampled_from("0123456789abcdefABCDEF-xz "), max_size=60))
def test_malformed_values_match_the_library(value: str) -> None:
    assert ours(value).is_valid == library(value).is_valid
    if library(value).is_valid:
        assert ours(value) == library(value)


def test_no_header_means_no_context() -> None:
    assert _context_from_headers({}) is None
