"""Upstream adapter 1 against dcmtk wlmscpfs as the Trust's worklist broker, and the
offline promise: with the broker down the modality is still served from the cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from trailerlink_testing.dcmtk import Wlmscpfs, findscu
from trailerlink_testing.waiting import async_wait_until
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.model import to_dataset
from trailerlink_worklist.upstream.dicom_mwl import MwlPoller, UpstreamUnavailable

from .conftest import booking


def publish(broker: Wlmscpfs, i: int, **changes: str) -> None:
    ds = to_dataset(booking(i, **changes))
    ds.SpecificCharacterSet = "ISO_IR 100"
    broker.write(f"b{i}", ds)


async def cfind_accessions(app: WorklistApp) -> set[str]:
    result = await asyncio.to_thread(
        findscu, "127.0.0.1", app.scp.port, "TRAILERLINK_MWL", ["AccessionNumber", "PatientName"]
    )
    assert result.final_status == "Success"
    return {str(r.AccessionNumber) for r in result.responses}


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    wl = Wlmscpfs(tmp_path / "broker", ae_title="NBSS_MWL", log_path=tmp_path / "broker.log")
    yield wl
    wl.stop()


def poller_app(make_app, broker: Wlmscpfs) -> WorklistApp:  # type: ignore[no-untyped-def]
    return make_app(
        upstream="dicom_mwl", upstream_mwl_port=broker.port, upstream_mwl_ae_title="NBSS_MWL"
    )


def test_poll_fills_the_cache_with_this_trailers_steps_only(make_app, broker) -> None:  # type: ignore[no-untyped-def]
    for i in range(6):
        publish(broker, i)
    publish(broker, 50, scheduled_station_ae_title="OTHERTRAILER")
    publish(broker, 51, scheduled_location="SITE-OTHER")
    publish(broker, 52, modality="CT")
    broker.start()
    app = poller_app(make_app, broker)
    assert isinstance(app.upstream, MwlPoller)
    assert app.upstream.poll_once() == 6
    assert {c.step.accession_number for c in app.cache.steps()} == {f"ACC{i:05d}" for i in range(6)}
    assert app.upstream.link.up is True
    assert app.worklist.last_sync() is not None
    # Polling again with nothing changed changes nothing.
    assert app.upstream.poll_once() == 0


async def test_cancellation_at_the_broker_leaves_the_next_cfind_within_seconds(
    make_app, broker
) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        publish(broker, i)
    broker.start()
    app = poller_app(make_app, broker)
    app.scp.start()
    stop = asyncio.Event()
    task = asyncio.create_task(app.upstream.run(stop))
    try:
        await async_wait_until(
            lambda: _accessions_are(app, {"ACC00000", "ACC00001", "ACC00002"}), 20, "first poll"
        )
        broker.remove("b1")
        publish(broker, 7)
        await async_wait_until(
            lambda: _accessions_are(app, {"ACC00000", "ACC00002", "ACC00007"}),
            20,
            "cancellation and addition seen by the modality",
        )
    finally:
        stop.set()
        await task


async def _accessions_are(app: WorklistApp, expected: set[str]) -> bool:
    return await cfind_accessions(app) == expected


async def test_offline_cfind_answers_from_the_cache_and_catches_up(make_app, broker) -> None:  # type: ignore[no-untyped-def]
    for i in range(4):
        publish(broker, i)
    broker.start()
    app = poller_app(make_app, broker)
    app.scp.start()
    assert app.upstream.poll_once() == 4

    broker.stop()  # the 4G link is down
    with pytest.raises(UpstreamUnavailable):
        app.upstream.poll_once()
    assert app.upstream.link.up is False
    assert await cfind_accessions(app) == {f"ACC{i:05d}" for i in range(4)}

    # Meanwhile upstream cancels one and books another; back online, both apply.
    broker.remove("b0")
    publish(broker, 9)
    broker.start()
    app.upstream.request_refresh()
    assert app.upstream.poll_once() == 2
    assert await cfind_accessions(app) == {"ACC00001", "ACC00002", "ACC00003", "ACC00009"}
    assert app.upstream.link.up is True


def test_changes_keep_local_status_and_corrections(make_app, broker) -> None:  # type: ignore[no-untyped-def]
    from trailerlink_worklist.corrections import Correction
    from trailerlink_worklist.model import StepStatus

    publish(broker, 0)
    broker.start()
    app = poller_app(make_app, broker)
    app.upstream.poll_once()
    key = booking(0).key
    app.worklist.set_status(key, StepStatus.ARRIVED)
    app.worklist.correct(key, Correction(family_name="TESTCORRECTED", reason="typo"), "staff1")
    publish(broker, 0, requested_procedure_description="Screening changed upstream")
    app.upstream.poll_once()
    cached = app.cache.get_step(key)
    assert cached.status == StepStatus.ARRIVED
    assert cached.step.patient_name.startswith("TESTCORRECTED^")
    assert cached.step.requested_procedure_description == "Screening changed upstream"
