"""An image's whole life in the fleet monitor, through the real broker: the gateway's
receipt (relayed by the trailer's agent, or carried by the delivery) is the audit
trail's `received` step at the gateway's own time; an image the gateway has and the
data centre has not is `on_trailer` with its age; acquisition -> PACS is measured from
that receipt, in sub-minute buckets; completeness says, per study, where the images
that are not in PACS are."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from trailerlink_events import topics
from trailerlink_events.messages import (
    ObjectDelivered,
    ObjectIdentity,
    ObjectReceived,
    PerformedInstance,
    ProcedureStepStatus,
    ProcedureStepUpdated,
    UploadCompleted,
    new_meta,
    timestamp,
)
from trailerlink_monitor.fleet.handler import FLEET_TOPICS
from trailerlink_testing.kafka_reader import read_events_sync, start_group_at_end
from trailerlink_testing.ports import free_port
from trailerlink_testing.scrape import publish_events as publish
from trailerlink_testing.scrape import sample
from trailerlink_testing.waiting import wait_until

MG = "1.2.840.10008.5.1.4.1.1.1.2"
HISTOGRAM = "trailerlink_monitor_acquisition_to_pacs_seconds"


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def _trailer() -> str:
    return f"trailer-{uuid.uuid4().hex[:6]}"


def _received(trailer: str, study: str, sop: str, at: datetime) -> ObjectReceived:
    return ObjectReceived(
        meta=new_meta("gateway", trailer),
        object=ObjectIdentity(study_instance_uid=study, sop_instance_uid=sop, sop_class_uid=MG),
        received_at=timestamp(at),
        dataset_size_bytes=1000,
    )


def _uploaded(trailer: str, study: str, sop: str, at: datetime) -> UploadCompleted:
    return UploadCompleted(
        meta=new_meta("ingest", trailer),
        upload_id=uuid.uuid4().hex,
        object=ObjectIdentity(study_instance_uid=study, sop_instance_uid=sop, sop_class_uid=MG),
        completed_at=timestamp(at),
    )


def _delivered(
    trailer: str, study: str, sop: str, received: datetime | None, delivered: datetime
) -> ObjectDelivered:
    ev = ObjectDelivered(
        meta=new_meta("ingest", trailer),
        object=ObjectIdentity(study_instance_uid=study, sop_instance_uid=sop, sop_class_uid=MG),
        pacs_ae_title="PACS",
        delivered_at=timestamp(delivered),
    )
    if received is not None:
        ev.received_at.CopyFrom(timestamp(received))
    return ev


def _journey(base: str, sop: str) -> list[dict]:
    rsp = httpx.get(f"{base}/v1/audit/instances/{sop}")
    return rsp.json()["journey"] if rsp.status_code == 200 else []


def test_an_image_the_gateway_has_is_on_the_trailer_with_its_age_until_it_is_sent(
    start_monitor, topics_created: str
) -> None:
    _, base = start_monitor()
    trailer, study, sop = _trailer(), _uid(), _uid()
    gateway_at = datetime.now(UTC) - timedelta(minutes=25)
    key = f"{trailer}/{study}"
    publish(
        topics_created,
        [(topics.CENTRAL_OBJECT_RECEIVED, key, _received(trailer, study, sop, gateway_at))],
    )

    steps = wait_until(lambda: _journey(base, sop), 30, "the gateway's receipt in the trail")
    assert [s["stage"] for s in steps] == ["received", "on_trailer"]
    received, on_trailer = steps
    assert received["service"] == "gateway"
    assert received["at"] == pytest.approx(gateway_at.timestamp(), abs=1e-6)  # its own time
    assert received["trailer_id"] == on_trailer["trailer_id"] == trailer
    assert 25 * 60 <= on_trailer["age_seconds"] < 26 * 60
    assert "not yet sent" in on_trailer["detail"] and "25m" in on_trailer["detail"]
    # The age is as of the question, not of the event: asked again, it has grown.
    later = wait_until(
        lambda: (
            (s := _journey(base, sop)) and s[-1]["age_seconds"] > on_trailer["age_seconds"] and s
        ),
        10,
        "the age growing",
        interval=0.2,
    )
    assert later[-1]["stage"] == "on_trailer"

    # Uploaded, then in PACS: no longer on the trailer, and the delivery's copy of the
    # gateway's time is the same one step, not a second receipt.
    uploaded_at = datetime.now(UTC) - timedelta(seconds=20)
    publish(
        topics_created,
        [
            (topics.CENTRAL_UPLOAD_COMPLETED, key, _uploaded(trailer, study, sop, uploaded_at)),
        ],
    )
    steps = wait_until(
        lambda: (s := _journey(base, sop)) and s[-1]["stage"] == "uploaded" and s,
        30,
        "the upload in the trail",
    )
    assert [s["stage"] for s in steps] == ["received", "uploaded"]
    publish(
        topics_created,
        [
            (
                topics.CENTRAL_OBJECT_DELIVERED,
                key,
                _delivered(trailer, study, sop, gateway_at, datetime.now(UTC)),
            ),
        ],
    )
    steps = wait_until(
        lambda: (s := _journey(base, sop)) and s[-1]["stage"] == "in_pacs" and s,
        30,
        "the delivery in the trail",
    )
    assert [s["stage"] for s in steps] == ["received", "uploaded", "in_pacs"]
    assert steps[0]["at"] == pytest.approx(gateway_at.timestamp(), abs=1e-6)
    assert all(s["age_seconds"] is None for s in steps)

    study_doc = httpx.get(f"{base}/v1/audit/studies/{study}").json()
    assert [s["stage"] for s in study_doc["journey"]] == ["received", "uploaded", "in_pacs"]


def test_acquisition_to_pacs_starts_at_the_gateways_receipt_in_sub_minute_buckets(
    start_monitor, topics_created: str
) -> None:
    # Only what this test publishes: the histogram has no label to tell other tests' apart.
    port = free_port()
    group = f"monitor-latency-{port}"
    asyncio.run(start_group_at_end(topics_created, group, list(FLEET_TOPICS)))
    _, base = start_monitor(TRAILERLINK_HTTP_PORT=str(port), TRAILERLINK_CONSUMER_GROUP=group)
    trailer, study = _trailer(), _uid()
    key = f"{trailer}/{study}"
    now = datetime.now(UTC)
    # 12 s and 40 s from the gateway to PACS (the upload's own time does not count), and
    # one delivery from an ingest that did not carry the gateway's time: not observed.
    fast, slow, unknown = _uid(), _uid(), _uid()
    publish(
        topics_created,
        [
            (topics.CENTRAL_UPLOAD_COMPLETED, key, _uploaded(trailer, study, fast, now)),
            (
                topics.CENTRAL_OBJECT_DELIVERED,
                key,
                _delivered(trailer, study, fast, now - timedelta(seconds=12), now),
            ),
            (
                topics.CENTRAL_OBJECT_DELIVERED,
                key,
                _delivered(trailer, study, slow, now - timedelta(seconds=40), now),
            ),
            (topics.CENTRAL_OBJECT_DELIVERED, key, _delivered(trailer, study, unknown, None, now)),
        ],
    )
    wait_until(
        lambda: (
            sample(base, "trailerlink_monitor_objects_delivered_total", trailer_id=trailer) == 3
        ),
        30,
        "three deliveries counted",
    )
    assert sample(base, HISTOGRAM + "_count") == 2
    assert abs(sample(base, HISTOGRAM + "_sum") - 52) < 0.01  # type: ignore[operator]
    buckets = {
        le: sample(base, HISTOGRAM + "_bucket", le=le)
        for le in ("5.0", "10.0", "15.0", "30.0", "45.0", "60.0", "90.0", "120.0")
    }
    assert buckets == {
        "5.0": 0,
        "10.0": 0,
        "15.0": 1,
        "30.0": 1,
        "45.0": 2,
        "60.0": 2,
        "90.0": 2,
        "120.0": 2,
    }
    # The delivery without the gateway's time claims no receipt time.
    assert [s["stage"] for s in _journey(base, unknown)] == ["in_pacs"]


def test_completeness_per_study_says_where_the_images_not_in_pacs_are(
    start_monitor, topics_created: str, fleet_database: dict[str, str]
) -> None:
    _, base = start_monitor(TRAILERLINK_COMPLETENESS_DEADLINE_SECONDS="3600", **fleet_database)
    trailer, other = _trailer(), _trailer()
    study, late_study = _uid(), _uid()
    on_trailer, at_dc, unseen, in_pacs = (_uid() for _ in range(4))
    now = datetime.now(UTC)

    def mpps(
        trailer_id: str, study_uid: str, sops: list[str], ended: datetime
    ) -> ProcedureStepUpdated:
        return ProcedureStepUpdated(
            meta=new_meta("worklist", trailer_id),
            mpps_sop_instance_uid=_uid(),
            status=ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
            study_instance_uid=study_uid,
            modality="MG",
            ended_at=timestamp(ended),
            performed_instances=[
                PerformedInstance(sop_instance_uid=s, sop_class_uid=MG) for s in sops
            ],
        )

    key = f"{trailer}/{study}"
    late = _uid()
    publish(
        topics_created,
        [
            (
                topics.CENTRAL_PROCEDURE_STEP,
                key,
                mpps(trailer, study, [on_trailer, at_dc, unseen, in_pacs], now),
            ),
            (topics.CENTRAL_OBJECT_RECEIVED, key, _received(trailer, study, on_trailer, now)),
            (topics.CENTRAL_OBJECT_RECEIVED, key, _received(trailer, study, at_dc, now)),
            (topics.CENTRAL_UPLOAD_COMPLETED, key, _uploaded(trailer, study, at_dc, now)),
            (topics.CENTRAL_OBJECT_DELIVERED, key, _delivered(trailer, study, in_pacs, now, now)),
            # Another trailer's study, listed two hours before the deadline's hour: missing.
            (
                topics.CENTRAL_PROCEDURE_STEP,
                f"{other}/{late_study}",
                mpps(other, late_study, [late], now - timedelta(hours=2)),
            ),
        ],
    )

    def studies(**params: str) -> dict:
        return httpx.get(f"{base}/v1/completeness", params=params).json()

    # Each topic is its own partition, read concurrently: wait until all five have landed
    # (the delivery may come after the receipts).
    def placed(d: dict) -> tuple[int, ...]:
        row = d["studies"][0] if d["studies"] else {}
        return tuple(
            row.get(k, -1) for k in ("on_trailer", "at_data_centre", "not_received", "pending")
        )

    doc = wait_until(
        lambda: placed(d := studies(trailer_id=trailer)) == (1, 1, 1, 3) and d,
        30,
        "the study's images placed",
    )
    assert doc["trailers"] == [{"trailer_id": trailer, "missing": 0, "pending": 3}]
    (entry,) = doc["studies"]
    assert entry["trailer_id"] == trailer and entry["study_instance_uid"] == study
    assert (entry["missing"], entry["pending"]) == (0, 3)
    assert (entry["on_trailer"], entry["at_data_centre"], entry["not_received"]) == (1, 1, 1)
    assert entry["listed_at"] == pytest.approx(now.timestamp(), abs=1e-6)
    assert entry["due_at"] == pytest.approx(now.timestamp() + 3600, abs=1e-6)

    everyone = wait_until(
        lambda: (
            (d := studies())
            and len([s for s in d["studies"] if s["trailer_id"] in (trailer, other)]) == 2
            and d
        ),
        30,
        "both trailers' studies",
    )
    mine = [s for s in everyone["studies"] if s["trailer_id"] in (trailer, other)]
    # The one past its deadline first.
    assert [s["study_instance_uid"] for s in mine] == [late_study, study]
    assert (mine[0]["missing"], mine[0]["pending"], mine[0]["not_received"]) == (1, 0, 1)
    assert {"trailer_id": other, "missing": 1, "pending": 0} in everyone["trailers"]

    # Delivered at last: the study leaves the list.
    publish(
        topics_created,
        [
            (
                topics.CENTRAL_OBJECT_DELIVERED,
                key,
                _delivered(trailer, study, s, now, datetime.now(UTC)),
            )
            for s in (on_trailer, at_dc, unseen)
        ],
    )
    wait_until(
        lambda: studies(trailer_id=trailer)["studies"] == [],
        30,
        "a complete study no longer listed",
    )
    assert studies(trailer_id=trailer)["trailers"] == [
        {"trailer_id": trailer, "missing": 0, "pending": 0}
    ]


def test_the_agent_relays_the_gateways_receipt_without_spool_details(
    start_monitor, topics_created: str, tmp_path: Path
) -> None:
    trailer, study, sop = _trailer(), _uid(), _uid()
    _, fleet = start_monitor("fleet")
    spool = tmp_path / "spool"
    spool.mkdir()
    relay_group = f"relay-{trailer}"
    asyncio.run(
        start_group_at_end(
            topics_created,
            relay_group,
            [topics.HEARTBEAT, topics.PROCEDURE_STEP, topics.OBJECT_RECEIVED],
        )
    )
    start_monitor(
        "agent",
        TRAILERLINK_TRAILER_ID=trailer,
        TRAILERLINK_SPOOL_DIR=str(spool),
        TRAILERLINK_HEARTBEAT_INTERVAL_SECONDS="5",
        TRAILERLINK_RELAY_URL=f"{fleet}/v1/events",
        TRAILERLINK_RELAY_GROUP=relay_group,
    )
    gateway_at = datetime.now(UTC) - timedelta(seconds=30)
    event = _received(trailer, study, sop, gateway_at)
    event.spool_path = "objects/20261205/x.tlspool"
    event.spool_key_id = "spool-key-1"
    event.calling_ae_title = "MODALITY1"
    publish(topics_created, [(topics.OBJECT_RECEIVED, study, event)])

    steps = wait_until(lambda: _journey(fleet, sop), 60, "the relayed receipt in the trail")
    assert [s["stage"] for s in steps] == ["received", "on_trailer"]
    assert steps[0]["at"] == pytest.approx(gateway_at.timestamp(), abs=1e-6)
    (relayed,) = read_events_sync(
        topics_created,
        topics.CENTRAL_OBJECT_RECEIVED,
        lambda seen: len(seen) >= 1,
        match=lambda d: d.key == f"{trailer}/{study}",
    )
    assert relayed.event.object.sop_instance_uid == sop
    assert relayed.event.received_at == event.received_at
    # Where it lies in the spool, its key and the modality's AE title stay on the trailer.
    assert (
        relayed.event.spool_path,
        relayed.event.spool_key_id,
        relayed.event.calling_ae_title,
    ) == ("", "", "")
