"""Back upstream through Kafka: corrections queued while upstream is offline arrive in
order once it is back (HL7 ADT^A08 to a python-hl7 MLLP server as the Trust), and
procedure step status goes up as HL7 ORM or as DICOM MPPS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import hl7
import pytest
from trailerlink_testing.hl7 import Hl7Inbox
from trailerlink_testing.ports import free_port
from trailerlink_testing.waiting import async_wait_until
from trailerlink_worklist import metrics
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.corrections import Correction
from trailerlink_worklist.model import Source

from .conftest import booking
from .test_mpps import _uid, completion, create_attrs

pytestmark = pytest.mark.kafka


async def _running(app: WorklistApp) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(app.publisher.run(stop))]
    tasks += [asyncio.create_task(r.run(stop)) for r in app.runners.values()]
    assert await app.producer.connect(stop)
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await app.producer.stop()


def _app(make_app, kafka_bootstrap: str, **overrides: object) -> WorklistApp:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app(
        kafka_bootstrap_servers=kafka_bootstrap,
        trailer_id=f"trailer-{uuid.uuid4().hex[:8]}",
        **overrides,
    )
    first, last = app.worklist.window()
    app.worklist.replace_window([booking(i) for i in range(4)], Source.DICOM_MWL, first, last)
    return app


def _delivered(kind: str, outcome: str) -> float:
    return metrics.UPSTREAM_DELIVERIES.labels(kind, outcome)._value.get()


async def test_corrections_queued_offline_arrive_in_order(make_app, kafka_bootstrap) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    app = _app(make_app, kafka_bootstrap, corrections_route="hl7", upstream_hl7_port=port)
    ids = []
    for i, family in enumerate(("TESTONE", "TESTTWO", "TESTTHREE")):
        event = app.worklist.correct(
            booking(i).key,
            Correction(family_name=family, birth_date="19700102", reason=f"seen ID card {i}"),
            corrected_by=f"radiographer{i}",
        )
        ids.append(event.correction_id)
    nhs = app.worklist.correct(
        booking(3).key, Correction(patient_id="9990000069", reason="NHS number typo"), "rad"
    )
    unavailable_before = _delivered("correction", "unavailable")
    gen = _running(app)
    await gen.__anext__()
    try:
        # Upstream is down: the first correction is retried, nothing is lost or skipped.
        await async_wait_until(
            lambda: _async(_delivered("correction", "unavailable") > unavailable_before),
            30,
            "a delivery attempt while upstream is offline",
        )
        # All four are safely in Kafka meanwhile (the outbox drains asynchronously).
        await async_wait_until(
            lambda: _async(app.cache.outbox_size() == 0), 30, "the outbox to drain into Kafka"
        )
        with Hl7Inbox(port=port) as inbox:
            await async_wait_until(
                lambda: _async(len(inbox.messages()) >= 4),
                60,
                "corrections delivered once upstream is back",
            )
            received = [hl7.parse(t) for t in inbox.messages()]
    finally:
        await gen.aclose()
    kinds = [str(msg.extract_field("MSH", 1, 9, 1, 2)) for msg in received]
    assert kinds == ["A08", "A08", "A08", "A47"]
    order = [str(msg.extract_field("ZCR", 1, 1, 1, 1)) for msg in received[:3]]
    assert order == ids
    first = received[0]
    assert str(first.extract_field("PID", 1, 5, 1, 1)) == "TESTONE"
    assert str(first.extract_field("EVN", 1, 5, 1, 1)) == "radiographer0"
    assert str(first.extract_field("PID", 1, 7, 1, 1)) == "19700102"
    a47 = received[3]
    assert str(a47.extract_field("PID", 1, 3, 1, 1)) == "9990000069"
    assert str(a47.extract_field("MRG", 1, 1, 1, 1)) == booking(3).patient_id
    assert nhs.correction_id in str(a47.extract_field("MSH", 1, 10, 1, 1))


async def test_status_goes_upstream_as_hl7_orm(make_app, kafka_bootstrap) -> None:  # type: ignore[no-untyped-def]
    with Hl7Inbox() as inbox:
        app = _app(make_app, kafka_bootstrap, status_route="hl7", upstream_hl7_port=inbox.port)
        uid = _uid()
        app.mpps.create(uid, create_attrs(0))
        app.mpps.update(uid, completion()[0])
        gen = _running(app)
        await gen.__anext__()
        try:
            await async_wait_until(
                lambda: _async(len(inbox.messages()) >= 2), 60, "ORM status messages"
            )
        finally:
            await gen.aclose()
        messages = [hl7.parse(t) for t in inbox.messages()]
    assert [str(msg.extract_field("ORC", 1, 5, 1, 1)) for msg in messages] == ["IP", "CM"]
    assert str(messages[1].extract_field("OBR", 1, 18, 1, 1)) == "ACC00000"


async def test_status_goes_upstream_as_dicom_mpps(make_app, kafka_bootstrap) -> None:  # type: ignore[no-untyped-def]
    trust: WorklistApp = make_app(dicom_ae_title="NBSS_MPPS")  # the Trust's MPPS SCP
    trust.scp.start()
    app = _app(
        make_app, kafka_bootstrap, status_route="dicom_mpps", upstream_mpps_port=trust.scp.port
    )
    uid = _uid()
    app.mpps.create(uid, create_attrs(1))
    mods, images = completion()
    app.mpps.update(uid, mods)
    gen = _running(app)
    await gen.__anext__()
    try:
        await async_wait_until(
            lambda: _async((r := trust.mpps.get(uid)) is not None and r.status == "COMPLETED"),
            60,
            "MPPS completed at the Trust",
        )
        await async_wait_until(
            lambda: _async(app.mpps.get(uid).upstream_state == "final"), 30, "forwarding recorded"
        )
    finally:
        await gen.aclose()
    series = trust.mpps.get(uid).attrs.PerformedSeriesSequence[0]
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedImageSequence] == images
    # A replayed event sends nothing twice (the Trust would refuse a second N-SET).
    forwarder = app.runners["status"].handler.__self__  # type: ignore[attr-defined]
    await asyncio.to_thread(forwarder._forward_dicom, uid)
    assert app.mpps.get(uid).upstream_state == "final"
    assert trust.mpps.get(uid).status == "COMPLETED"


async def _async(value: bool) -> bool:
    return value
