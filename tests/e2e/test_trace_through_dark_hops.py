"""Sampling is the gateway's, whoever exports: with every trailer service's exporter off
(the default), the data centre's spans of an image still land, sampled, in the trace the
gateway's C-STORE started — the hops that export nothing pass its context through
unchanged, sampled flag included. (Before, a hop with its exporter off silenced every
hop after it.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from trailerlink_testing.jaeger import Jaeger
from trailerlink_testing.waiting import wait_until

from .conftest import System, _system

pytestmark = pytest.mark.kafka

SOP_TAG = "dicom.sop_instance_uid"


@pytest.fixture(scope="module")
def dark_trailer(tmp_path_factory: pytest.TempPathFactory, jaeger: Jaeger) -> Iterator[System]:
    """The data centre exports to Jaeger; nothing on the trailer exports."""
    yield from _system(
        tmp_path_factory.mktemp("e2e-dark-trailer"),
        2,
        site_env=jaeger.exporter_env(),
        trailer_site_env={},
    )


def _parents_not_exported(trace: dict[str, Any]) -> set[str]:
    """Span ids that spans of ``trace`` name as parent but that are not in it."""
    ids = {s["spanID"] for s in trace["spans"]}
    return {
        r["spanID"]
        for s in trace["spans"]
        for r in s.get("references", [])
        if r["refType"] == "CHILD_OF" and r["spanID"] not in ids
    }


def _ingest_traces(jaeger: Jaeger, sop: str) -> list[dict[str, Any]]:
    """The ingest's traces of ``sop`` once they hold its PACS store and every parent the
    ingest exports: a span is exported when it ends, after its children, often in a later
    batch, so a trace read too early lacks the parents of its PACS store."""
    found = jaeger.traces("trailerlink-ingest", tags=json.dumps({SOP_TAG: sop}))
    done = any(s["operationName"] == "ingest.pacs.store" for t in found for s in t["spans"])
    complete = all(len(_parents_not_exported(t)) <= 1 for t in found)
    return found if done and complete else []


def test_hops_that_export_nothing_keep_each_image_in_the_gateways_sampled_trace(
    dark_trailer: System, jaeger: Jaeger
) -> None:
    [item] = dark_trailer.next_women(1)
    study = dark_trailer.screen(item)
    assert len(study.sent) == 4 and not study.failed
    dark_trailer.wait_confirmed([study])
    gateway_log = (dark_trailer.trailer.logs / "gateway.log").read_text().splitlines()
    answered = {
        ln["sop_instance_uid"]: ln
        for ln in map(json.loads, filter(lambda line: line.startswith("{"), gateway_log))
        if ln.get("msg") == "store answered"
    }
    for sop in study.sent:
        # The gateway started the image's trace without exporting it: its log line names it.
        store = answered[sop]
        traces = wait_until(
            lambda sop=sop: _ingest_traces(jaeger, sop),
            90,
            f"the ingest's spans of {sop} in Jaeger",
            interval=0.5,
        )
        assert [t["traceID"] for t in traces] == [store["trace_id"]], sop
        [trace] = traces
        services = {p["serviceName"] for p in trace["processes"].values()}
        assert not services & {"trailerlink-gateway", "trailerlink-codec", "trailerlink-uplink"}, (
            services
        )
        # Every span whose parent was not exported hangs from the C-STORE itself: the
        # codec and the uplink passed its context on unchanged.
        assert _parents_not_exported(trace) == {store["span_id"]}, sop
