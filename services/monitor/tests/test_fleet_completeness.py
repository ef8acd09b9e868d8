"""Fleet mode, end to end through the real broker: images an MPPS lists must reach PACS,
and support can follow each one's journey."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from trailerlink_events import topics
from trailerlink_events.messages import (
    ObjectDelivered,
    ObjectIdentity,
    PerformedInstance,
    ProcedureStepStatus,
    ProcedureStepUpdated,
    new_meta,
    timestamp,
)
from trailerlink_testing.scrape import publish_events as publish
from trailerlink_testing.scrape import sample
from trailerlink_testing.waiting import wait_until

MG = "1.2.840.10008.5.1.4.1.1.1.2"


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def _delivered(trailer: str, study: str, sop: str) -> ObjectDelivered:
    now = datetime.now(UTC)
    return ObjectDelivered(
        meta=new_meta("ingest", trailer),
        object=ObjectIdentity(study_instance_uid=study, sop_instance_uid=sop, sop_class_uid=MG),
        pacs_ae_title="PACS",
        received_at=timestamp(now - timedelta(minutes=7)),
        delivered_at=timestamp(now),
    )


def test_mpps_lists_four_three_delivered_missing_one_reported_until_it_arrives(
    start_monitor, topics_created: str, fleet_database: dict[str, str]
) -> None:
    _, base = start_monitor(TRAILERLINK_COMPLETENESS_DEADLINE_SECONDS="2", **fleet_database)
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    study = _uid()
    sops = [_uid() for _ in range(4)]
    step = ProcedureStepUpdated(
        meta=new_meta("worklist", trailer),
        mpps_sop_instance_uid=_uid(),
        status=ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
        study_instance_uid=study,
        modality="MG",
        ended_at=timestamp(),
        performed_instances=[PerformedInstance(sop_instance_uid=s, sop_class_uid=MG) for s in sops],
    )
    key = f"{trailer}/{study}"
    publish(
        topics_created,
        [
            (topics.CENTRAL_PROCEDURE_STEP, key, step),
            *[
                (topics.CENTRAL_OBJECT_DELIVERED, key, _delivered(trailer, study, s))
                for s in sops[:3]
            ],
        ],
    )

    def missing() -> list[str]:
        body = httpx.get(f"{base}/v1/completeness/missing", params={"trailer_id": trailer}).json()
        return [m["sop_instance_uid"] for m in body["missing"]]

    wait_until(lambda: missing() == [sops[3]], 30, "the fourth image listed as missing")
    wait_until(
        lambda: (
            sample(base, "trailerlink_monitor_completeness_missing_images", trailer_id=trailer) == 1
        ),
        10,
        "missing gauge at 1",
    )
    assert sample(base, "trailerlink_monitor_objects_delivered_total", trailer_id=trailer) == 3

    # A replayed delivery changes nothing; the fourth clears the gap.
    publish(
        topics_created,
        [
            (topics.CENTRAL_OBJECT_DELIVERED, key, _delivered(trailer, study, sops[0])),
            (topics.CENTRAL_OBJECT_DELIVERED, key, _delivered(trailer, study, sops[3])),
        ],
    )
    wait_until(lambda: missing() == [], 30, "the gap cleared")
    wait_until(
        lambda: (
            sample(base, "trailerlink_monitor_completeness_missing_images", trailer_id=trailer) == 0
        ),
        10,
        "missing gauge back at 0",
    )
    assert sample(base, "trailerlink_monitor_objects_delivered_total", trailer_id=trailer) == 4

    journey = httpx.get(f"{base}/v1/audit/instances/{sops[3]}").json()["journey"]
    assert [s["stage"] for s in journey] == ["received", "taken", "in_pacs"] or [
        s["stage"] for s in journey
    ][-1] == "in_pacs"
    study_steps = httpx.get(f"{base}/v1/audit/studies/{study}").json()["journey"]
    assert {s["stage"] for s in study_steps} >= {"mpps.completed", "taken", "received", "in_pacs"}
    assert httpx.get(f"{base}/v1/audit/instances/{_uid()}").status_code == 404


def test_state_survives_a_restart(
    start_monitor, topics_created: str, fleet_database: dict[str, str]
) -> None:
    proc, base = start_monitor(TRAILERLINK_COMPLETENESS_DEADLINE_SECONDS="1", **fleet_database)
    trailer = f"trailer-{uuid.uuid4().hex[:6]}"
    study, sop = _uid(), _uid()
    publish(
        topics_created,
        [
            (
                topics.CENTRAL_PROCEDURE_STEP,
                f"{trailer}/{study}",
                ProcedureStepUpdated(
                    meta=new_meta("worklist", trailer),
                    mpps_sop_instance_uid=_uid(),
                    status=ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
                    study_instance_uid=study,
                    ended_at=timestamp(),
                    performed_instances=[PerformedInstance(sop_instance_uid=sop, sop_class_uid=MG)],
                ),
            )
        ],
    )
    wait_until(
        lambda: (
            sample(base, "trailerlink_monitor_completeness_missing_images", trailer_id=trailer) == 1
        ),
        30,
        "missing before restart",
    )
    proc.kill9()
    proc.start()
    proc.wait_ready(f"{base}/readyz")
    wait_until(
        lambda: (
            sample(base, "trailerlink_monitor_completeness_missing_images", trailer_id=trailer) == 1
        ),
        30,
        "missing after restart",
    )
