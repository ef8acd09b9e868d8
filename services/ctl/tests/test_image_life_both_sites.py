"""An image's whole life, read by support with `trailerlinkctl`, on both sites as real
processes (``trailerlink_testing.stack``: two brokers, Orthanc, gateway, codec, uplink,
ingest, the trailer's agent relaying to the fleet monitor). While the trailer is paused,
`trace` shows each image `received` at the gateway's own time and `on_trailer` (not yet
sent) with its age, and `completeness` shows the study pending, on the trailer; once
resumed, each image is `in_pacs`, still received at the gateway's time (one step, though
two events carried it), and acquisition -> PACS measured that image from the gateway's
receipt to its delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from trailerlink_events import topics
from trailerlink_testing.kafka_reader import read_events
from trailerlink_testing.scrape import sample
from trailerlink_testing.stack import (
    CentralStack,
    SimulatedModality,
    TrailerStack,
    synthetic_day,
)
from trailerlink_testing.waiting import wait_until

from .conftest import Ctl

pytestmark = pytest.mark.kafka
HISTOGRAM = "trailerlink_monitor_acquisition_to_pacs_seconds"


@pytest.fixture(scope="module")
def sites(
    tmp_path_factory: pytest.TempPathFactory, token_file: Path
) -> Iterator[tuple[CentralStack, TrailerStack, SimulatedModality, Ctl]]:
    directory = tmp_path_factory.mktemp("life")
    bookings = synthetic_day(1, seed=23)
    with (
        CentralStack(directory / "central") as central,
        TrailerStack(
            directory / "trailer",
            central,
            bookings,
            uplink_env={"TRAILERLINK_ADMIN_TOKEN_FILE": str(token_file)},
        ) as trailer,
        SimulatedModality(trailer, directory / "modality", rows=256, columns=208) as modality,
    ):
        modality.wait_for_worklist(1)
        ctl = Ctl(
            {
                "TRAILERLINKCTL_TOKEN_FILE": str(token_file),
                "TRAILERLINKCTL_UPLINK_URL": trailer.uplink.url(""),
                "TRAILERLINKCTL_MONITOR_URL": central.fleet.url(""),
            }
        )
        yield central, trailer, modality, ctl


def _journey(ctl: Ctl, study_uid: str) -> list[dict]:
    result = ctl("trace", "--study", study_uid, "--json")
    return result.json()["journey"] if result.code == 0 else []


def _by_stage(steps: list[dict], stage: str) -> dict[str, dict]:
    return {s["sop_instance_uid"]: s for s in steps if s["stage"] == stage}


def test_a_paused_trailers_images_show_on_the_trailer_then_in_pacs_from_the_gateways_time(
    sites: tuple[CentralStack, TrailerStack, SimulatedModality, Ctl],
) -> None:
    central, trailer, modality, ctl = sites
    trailer_id = central.trailer_id
    assert ctl("uplink", "pause").code == 0
    try:
        study = modality.screen(modality.query_worklist()[0], seed=5)
        assert len(study.sent) == 4, study.failed
        sops = set(study.sent)
        uid = study.study_instance_uid
        # The gateway's own receive times, from its events on the trailer's broker.
        received = asyncio.run(
            read_events(
                trailer.broker.bootstrap,
                topics.OBJECT_RECEIVED,
                lambda seen: len(seen) >= 4,
                match=lambda d: d.event.object.study_instance_uid == uid,
            )
        )
        gateway_at = {
            d.event.object.sop_instance_uid: d.event.received_at.seconds
            + d.event.received_at.nanos / 1e9
            for d in received
        }
        assert set(gateway_at) == sops

        # Nothing has left the trailer, and support sees exactly that.
        steps = wait_until(
            lambda: (s := _journey(ctl, uid)) and set(_by_stage(s, "on_trailer")) == sops and s,
            60,
            "every image on the trailer in the trail",
            interval=0.5,
        )
        for sop, step in _by_stage(steps, "received").items():
            assert step["service"] == "gateway" and step["trailer_id"] == trailer_id
            assert step["at"] == pytest.approx(gateway_at[sop], abs=1e-6)
        for step in _by_stage(steps, "on_trailer").values():
            assert step["age_seconds"] >= 0 and "not yet sent" in step["detail"]
        assert not _by_stage(steps, "uploaded") and not _by_stage(steps, "in_pacs")
        human = ctl("trace", "--study", uid)
        assert human.code == 0 and human.out.count("on_trailer") == 4

        def pending() -> dict | None:
            doc = ctl("completeness", trailer_id, "--json").json()
            mine = [s for s in doc["studies"] if s["study_instance_uid"] == uid]
            return mine[0] if mine and mine[0]["on_trailer"] == 4 else None

        entry = wait_until(pending, 60, "the study pending, on the trailer", interval=0.5)
        assert (
            entry["pending"],
            entry["missing"],
            entry["at_data_centre"],
            entry["not_received"],
        ) == (4, 0, 0, 0)
    finally:
        assert ctl("uplink", "resume").code == 0

    steps = wait_until(
        lambda: (s := _journey(ctl, uid)) and set(_by_stage(s, "in_pacs")) == sops and s,
        180,
        "every image in PACS in the trail",
        interval=0.5,
    )
    assert not _by_stage(steps, "on_trailer")
    # One receipt each, at the gateway's time, though the relay and the delivery both
    # carried it; the upload is later.
    assert len([s for s in steps if s["stage"] == "received"]) == 4
    uploaded = _by_stage(steps, "uploaded")
    for sop, step in _by_stage(steps, "received").items():
        assert step["at"] == pytest.approx(gateway_at[sop], abs=1e-6)
        assert uploaded[sop]["at"] > step["at"]

    # Acquisition -> PACS: from each image's gateway receipt to its delivery, exactly.
    delivered = asyncio.run(
        read_events(
            central.broker.bootstrap,
            topics.CENTRAL_OBJECT_DELIVERED,
            lambda seen: len(seen) >= 4,
            match=lambda d: d.key == f"{trailer_id}/{uid}",
        )
    )
    expected = sum(
        d.event.delivered_at.seconds
        + d.event.delivered_at.nanos / 1e9
        - gateway_at[d.event.object.sop_instance_uid]
        for d in delivered
    )
    fleet = central.fleet.url("")
    wait_until(
        lambda: sample(fleet, HISTOGRAM + "_count") == 4,
        30,
        "four latencies observed",
        interval=0.5,
    )
    assert sample(fleet, HISTOGRAM + "_sum") == pytest.approx(expected, abs=1e-3)

    done = ctl("completeness", trailer_id)
    assert done.code == 0 and "is in PACS" in done.out
