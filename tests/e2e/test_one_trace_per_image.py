"""One trace per image, in a real trace backend: every service of both sites exports
OTLP to Jaeger; a woman is screened; Jaeger's query API must then hold, for each of
her images, one trace rooted at the gateway's C-STORE that also holds the codec's,
the uplink's and the ingest's spans of that SOP Instance UID, each hop a child of the
one before it, and no trace started by anything but a C-STORE (no heartbeats, polls,
scrapes or health checks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from trailerlink_testing.jaeger import Jaeger
from trailerlink_testing.stack import booking_secrets
from trailerlink_testing.waiting import wait_until

from .conftest import System, _system

pytestmark = pytest.mark.kafka

HOPS = ("gateway", "codec", "uplink", "ingest")
SOP_TAG = "dicom.sop_instance_uid"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, jaeger: Jaeger) -> Iterator[System]:
    """Both sites, every service exporting its spans to Jaeger."""
    yield from _system(tmp_path_factory.mktemp("e2e-traced"), 2, site_env=jaeger.exporter_env())


def _service(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"]).removeprefix("trailerlink-")


def _tag(span: dict[str, Any], key: str) -> object:
    return next((t["value"] for t in span.get("tags", []) if t["key"] == key), None)


def _parent(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


def _traces_of(jaeger: Jaeger, service: str, sop: str) -> list[dict[str, Any]]:
    return jaeger.traces(f"trailerlink-{service}", tags=json.dumps({SOP_TAG: sop}))


def _whole_trace(jaeger: Jaeger, sop: str) -> dict[str, Any] | None:
    """The trace of ``sop`` once it holds the PACS store and every span's parent (spans
    reach Jaeger in batches, a child now and then before its parent)."""
    found = _traces_of(jaeger, "gateway", sop)
    if len(found) != 1:
        return None
    trace = found[0]
    ids = {s["spanID"] for s in trace["spans"]}
    if "ingest.pacs.store" not in {s["operationName"] for s in trace["spans"]}:
        return None
    return trace if all(_parent(s) in ids for s in trace["spans"] if _parent(s)) else None


def test_each_image_is_one_trace_from_the_c_store_to_pacs(traced: System, jaeger: Jaeger) -> None:
    [item] = traced.next_women(1)
    study = traced.screen(item)
    assert len(study.sent) == 4 and not study.failed
    traced.wait_confirmed([study])
    traced.assert_in_pacs_byte_identical([study])
    secrets = booking_secrets(traced.bookings)
    trace_ids: dict[str, str] = {}
    for sop in study.sent:
        trace = wait_until(
            lambda sop=sop: _whole_trace(jaeger, sop),
            90,
            f"one trace of {sop} holding its PACS store, every span's parent in it",
            interval=0.5,
        )
        trace_ids[sop] = trace["traceID"]
        spans = {s["spanID"]: s for s in trace["spans"]}

        # One root: the gateway's C-STORE of this image; every other span's parent is a
        # span of this same trace (no hop started a trace of its own or lost its parent).
        roots = [s for s in spans.values() if _parent(s) is None]
        assert [(_service(trace, r), r["operationName"]) for r in roots] == [
            ("gateway", "dicom.c-store")
        ], sop
        assert _tag(roots[0], SOP_TAG) == sop
        for span in spans.values():
            assert all(r["traceID"] == trace["traceID"] for r in span.get("references", []))
            parent = _parent(span)
            assert parent is None or parent in spans, (
                f"{_service(trace, span)} {span['operationName']} of {sop}: parent not in the trace"
            )

        # Each hop's span of this image descends from the hop before it.
        hop_spans = {
            hop: [
                s for s in spans.values() if _service(trace, s) == hop and _tag(s, SOP_TAG) == sop
            ]
            for hop in HOPS
        }
        assert all(hop_spans.values()), {h: len(v) for h, v in hop_spans.items()}
        [pacs] = [s for s in hop_spans["ingest"] if s["operationName"] == "ingest.pacs.store"]
        path: list[str] = []
        span: dict[str, Any] | None = pacs
        while span is not None:
            service = _service(trace, span)
            if not path or path[-1] != service:
                path.append(service)
            parent = _parent(span)
            span = spans[parent] if parent else None
        assert [s for s in path if s in HOPS] == list(reversed(HOPS)), path

        # The hand-offs did not split the image: no other trace of it at any hop.
        for hop in HOPS[1:]:
            assert {t["traceID"] for t in _traces_of(jaeger, hop, sop)} == {trace["traceID"]}

        # Span attributes carry UIDs, never patient data.
        tags = json.dumps([s.get("tags", []) for s in spans.values()])
        assert not [s for s in secrets if s in tags], f"patient data in the spans of {sop}"

    assert len(set(trace_ids.values())) == len(study.sent)  # one trace per image

    # Log lines written inside a span carry its trace id: the gateway's and the codec's
    # lines about each image name that image's trace.
    for name in ("gateway", "codec"):
        lines = [
            json.loads(line)
            for line in (traced.trailer.logs / f"{name}.log").read_text().splitlines()
            if line.startswith("{")
        ]
        for sop, trace_id in trace_ids.items():
            about = [ln for ln in lines if ln.get("sop_instance_uid") == sop]
            assert about and all(ln.get("trace_id") == trace_id for ln in about), (name, sop)


def test_only_c_stores_start_traces_no_heartbeat_poll_scrape_or_health_check(
    traced: System, jaeger: Jaeger
) -> None:
    """By now heartbeats have gone out, receipts were polled every second and /metrics
    and /readyz were asked many times: none of that started a trace."""
    for service in traced.trailer.services.values():
        assert service.ready()
        service.metric("trailerlink_build_info")
    services = [s for s in jaeger.services() if s.startswith("trailerlink-")]
    assert {f"trailerlink-{hop}" for hop in HOPS} <= set(services)
    for service in services:
        for trace in jaeger.traces(service):
            roots = [s for s in trace["spans"] if _parent(s) is None]
            started = {(_service(trace, r), r["operationName"]) for r in roots}
            assert started == {("gateway", "dicom.c-store")}, (service, started)
