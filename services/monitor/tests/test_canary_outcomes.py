"""The canary's outcomes other than "passed", against real DICOM peers (a pynetdicom
storage SCP standing in for the gateway, or nothing listening): a gateway that cannot be
reached or answers with a failure status is "refused", an ObjectFailed for the canary's
SOP UID is "failed", and each is counted and leaves the success gauge at 0."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import REGISTRY
from pynetdicom import AE, evt
from trailerlink_events import topics
from trailerlink_events.kafka import Delivery
from trailerlink_events.messages import ObjectFailed, ObjectIdentity, new_meta
from trailerlink_monitor.agent.canary import MG_FOR_PRESENTATION, Canary, CanaryTarget
from trailerlink_testing.ports import free_port


def _runs(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "trailerlink_monitor_agent_canary_runs_total", {"outcome": outcome}
        )
        or 0.0
    )


def _scp(status: int) -> tuple[object, int, list[str], threading.Event]:
    """A storage SCP that answers every C-STORE with ``status``; the UIDs it saw and an
    event set at the first."""
    seen: list[str] = []
    stored = threading.Event()

    def on_store(event: evt.Event) -> int:
        seen.append(str(event.request.AffectedSOPInstanceUID))
        stored.set()
        return status

    ae = AE(ae_title="TRAILERLINK")
    ae.add_supported_context(MG_FOR_PRESENTATION)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    return server, port, seen, stored


def _canary(port: int, deadline: float = 20.0) -> Canary:
    return Canary(
        "trailer-test",
        CanaryTarget("127.0.0.1", port, "TRAILERLINK", "TLCANARY", timeout_seconds=5),
        60,
        deadline,
    )


async def test_an_unreachable_gateway_is_refused() -> None:
    before = _runs("refused")
    result = await _canary(free_port()).run_once()
    assert (result.ok, result.outcome) == (False, "refused")
    assert _runs("refused") == before + 1
    assert REGISTRY.get_sample_value("trailerlink_monitor_agent_canary_ok") == 0


async def test_a_failure_status_from_the_gateway_is_refused() -> None:
    server, port, seen, _ = _scp(0xA700)  # out of resources: the gateway did not keep it
    try:
        result = await _canary(port).run_once()
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert result.outcome == "refused" and seen == [result.sop_instance_uid]


async def test_an_object_failed_for_the_canary_fails_it_before_the_deadline() -> None:
    server, port, seen, stored = _scp(0x0000)
    canary = _canary(port, deadline=60)
    before = _runs("failed")
    try:
        run = asyncio.ensure_future(canary.run_once())
        # Once the gateway has the object, the outcome comes back.
        assert await asyncio.to_thread(stored.wait, 30)
        other = ObjectFailed(
            meta=new_meta("uplink", "trailer-test"),
            object=ObjectIdentity(sop_instance_uid="2.25.1"),
            stage="x",
        )
        mine = ObjectFailed(
            meta=new_meta("uplink", "trailer-test"),
            object=ObjectIdentity(sop_instance_uid=seen[0]),
            stage="ingest.pacs",
        )
        for offset, event in enumerate((other, mine)):
            await canary.handle(Delivery(topics.OBJECT_FAILED, 0, offset, "k", event, {}))
        result = await asyncio.wait_for(run, 30)
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    assert (result.ok, result.outcome) == (False, "failed")
    assert result.seconds < 60  # it did not wait for the deadline
    assert _runs("failed") == before + 1
    assert canary.last == result
