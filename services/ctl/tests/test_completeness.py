"""`trailerlinkctl completeness` and the trail of an image still on the trailer, over a
running fleet monitor fed through the real broker: images taken but not in PACS per
trailer and study, with where they are; unknown trailers, bad names and a dead monitor
are clear failures."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from trailerlink_events import topics
from trailerlink_events.messages import (
    ObjectIdentity,
    ObjectReceived,
    PerformedInstance,
    ProcedureStepStatus,
    ProcedureStepUpdated,
    UploadCompleted,
    new_meta,
    timestamp,
)
from trailerlink_testing.scrape import publish_events
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka
MG = "1.2.840.10008.5.1.4.1.1.1.2"


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def test_completeness_lists_pending_images_per_trailer_and_study(ctl, kafka_bootstrap):
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    study = _uid()
    waiting, uploaded, unseen = _uid(), _uid(), _uid()
    now = datetime.now(UTC)
    key = f"{trailer}/{study}"

    def ident(sop: str) -> ObjectIdentity:
        return ObjectIdentity(study_instance_uid=study, sop_instance_uid=sop, sop_class_uid=MG)

    publish_events(
        kafka_bootstrap,
        [
            (
                topics.CENTRAL_PROCEDURE_STEP,
                key,
                ProcedureStepUpdated(
                    meta=new_meta("worklist", trailer),
                    mpps_sop_instance_uid=_uid(),
                    status=ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
                    study_instance_uid=study,
                    modality="MG",
                    ended_at=timestamp(now),
                    performed_instances=[
                        PerformedInstance(sop_instance_uid=s, sop_class_uid=MG)
                        for s in (waiting, uploaded, unseen)
                    ],
                ),
            ),
            (
                topics.CENTRAL_OBJECT_RECEIVED,
                key,
                ObjectReceived(
                    meta=new_meta("gateway", trailer),
                    object=ident(waiting),
                    received_at=timestamp(now - timedelta(minutes=3)),
                ),
            ),
            (
                topics.CENTRAL_OBJECT_RECEIVED,
                key,
                ObjectReceived(
                    meta=new_meta("gateway", trailer),
                    object=ident(uploaded),
                    received_at=timestamp(now - timedelta(minutes=3)),
                ),
            ),
            (
                topics.CENTRAL_UPLOAD_COMPLETED,
                key,
                UploadCompleted(
                    meta=new_meta("ingest", trailer),
                    object=ident(uploaded),
                    completed_at=timestamp(now),
                ),
            ),
        ],
    )

    def listed() -> dict | None:
        result = ctl("completeness", trailer, "--json")
        if result.code != 0:
            return None
        doc = result.json()
        studies = doc["studies"]
        return doc if studies and studies[0]["at_data_centre"] == 1 else None

    doc = wait_until(listed, 30, "the study in completeness", interval=0.3)
    assert doc["trailers"] == [{"trailer_id": trailer, "missing": 0, "pending": 3}]
    (entry,) = doc["studies"]
    assert entry["study_instance_uid"] == study and entry["trailer_id"] == trailer
    assert (
        entry["missing"],
        entry["pending"],
        entry["on_trailer"],
        entry["at_data_centre"],
        entry["not_received"],
    ) == (0, 3, 1, 1, 1)
    assert doc["deadline_seconds"] > 0

    human = ctl("completeness", trailer)
    assert human.code == 0, human.err
    header = next(line for line in human.out.splitlines() if "STUDY INSTANCE UID" in line)
    assert "ON TRAILER" in header and "NOT RECEIVED" in header and "DEADLINE" in header
    row = next(line for line in human.out.splitlines() if study in line)
    assert row.split()[2:7] == ["0", "3", "1", "1", "1"]
    assert "in 3h" in row  # the deadline, 4 h after the MPPS
    fleet = ctl("completeness", "--json")
    assert fleet.code == 0
    assert study in {s["study_instance_uid"] for s in fleet.json()["studies"]}

    # The image the gateway has and the data centre does not: on the trailer, with its age.
    trace = ctl("trace", waiting, "--json")
    assert trace.code == 0, trace.err
    stages = [s["stage"] for s in trace.json()["journey"]]
    assert stages == ["taken", "received", "on_trailer"] or stages == [
        "received",
        "taken",
        "on_trailer",
    ]
    on_trailer = trace.json()["journey"][-1]
    assert 180 <= on_trailer["age_seconds"] < 240
    human_trace = ctl("trace", waiting)
    assert "on_trailer" in human_trace.out and "not yet sent: 3m" in human_trace.out


def test_completeness_of_an_unknown_or_bad_trailer_and_a_dead_monitor_fail_clearly(ctl):
    nobody = ctl("completeness", "trailer-nobody", "--json")
    assert nobody.code == 3 and "unknown trailer" in nobody.json()["error"]
    assert ctl("completeness", "Not_A_Trailer").code == 2
    assert ctl("completeness", "--limit", "0").code == 2
    down = ctl("completeness", TRAILERLINKCTL_MONITOR_URL="http://127.0.0.1:9")
    assert down.code == 5 and "unreachable" in down.err
