"""`trailerlinkctl resend --study` against both sites as real processes
(``trailerlink_testing.stack``: two brokers, Orthanc, gateway, codec, uplink, ingest):
a study delivered to Orthanc is sent again, its receipts come back, and the PACS still
holds one byte-identical instance per SOP UID because the ingest's ledger made no second
store. Unknown, malformed and purged studies, a study still in flight and missing
credentials are refused with a clear message and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from trailerlink_testing.stack import (
    CentralStack,
    SimulatedModality,
    StudyResult,
    TrailerStack,
    synthetic_day,
)
from trailerlink_testing.waiting import wait_until
from trailerlink_uplink.janitor import Janitor
from trailerlink_uplink.queue import SendQueue

from .conftest import TOKEN, Ctl

pytestmark = pytest.mark.kafka
WOMEN = 2


@dataclass
class Sites:
    central: CentralStack
    trailer: TrailerStack
    modality: SimulatedModality
    ctl: Ctl
    bookings: list

    def deliver(self, index: int, seed: int) -> StudyResult:
        """Screen woman ``index``; return once every image is in PACS and the uplink
        holds no object awaiting a receipt."""
        item = next(
            i
            for i in self.modality.query_worklist()
            if str(i.AccessionNumber) == self.bookings[index].accession_number
        )
        receipts = self.delivered_receipts()
        study = self.modality.screen(item, seed=seed)
        assert len(study.sent) == 4, study.failed
        wait_until(lambda: study.confirmed, 240, "storage commitment of the study", interval=0.25)
        # Counted after the queue rows are marked delivered.
        wait_until(
            lambda: self.delivered_receipts() >= receipts + 4,
            60,
            "delivered receipts recorded",
            interval=0.25,
        )
        # The backlog gauges are refreshed on a timer: let them catch up with the queue, so
        # a later "nothing was queued" reads the queue's state, not a stale gauge.
        wait_until(
            lambda: self.trailer.backlog_objects() == 0,
            60,
            "backlog gauges at zero after delivery",
            interval=0.25,
        )
        return study

    def delivered_receipts(self) -> float:
        return self.uplink_metric("trailerlink_uplink_receipts_total", outcome="delivered")

    def uplink_metric(self, name: str, **labels: str) -> float:
        return self.trailer.uplink.metric(name, **labels)

    def pacs_stores(self) -> float:
        return self.central.ingest.metric("trailerlink_ingest_pacs_store_seconds_count")


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[Sites]:
    directory = tmp_path_factory.mktemp("resend")
    bookings = synthetic_day(WOMEN, seed=17)
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
        modality.wait_for_worklist(WOMEN)
        ctl = Ctl(
            {
                "TRAILERLINKCTL_TOKEN_FILE": str(token_file),
                "TRAILERLINKCTL_UPLINK_URL": trailer.uplink.url(""),
            }
        )
        yield Sites(central, trailer, modality, ctl, bookings)


def test_resend_of_a_delivered_study_makes_no_second_pacs_store(sites: Sites) -> None:
    study = sites.deliver(0, seed=3)
    ctl, central = sites.ctl, sites.central
    stores = sites.pacs_stores()
    assert stores >= 4
    duplicates = central.ingest.metric("trailerlink_ingest_duplicates_total")
    receipts = sites.uplink_metric("trailerlink_uplink_receipts_total", outcome="delivered")
    created = sites.uplink_metric("trailerlink_uplink_uploads_total", outcome="created")

    # Paused, the resent study stays queued: a second resend meanwhile is a conflict.
    assert ctl("uplink", "pause").code == 0
    done = ctl(
        "resend", "--study", study.study_instance_uid, "--reason", "PACS restore INC-4711", "--json"
    )
    assert done.code == 0, done.err
    doc = done.json()
    assert doc["study_uid"] == study.study_instance_uid and doc["count"] == 4
    assert doc["reason"] == "PACS restore INC-4711" and doc["requested_by"]
    assert {o["sop_instance_uid"]: o["dataset_sha256"] for o in doc["objects"]} == study.sent
    assert all(o["key_id"] and o["state"] == "queued" for o in doc["objects"])
    assert doc["bytes"] == sum(o["sealed_size"] for o in doc["objects"]) > 0
    again = ctl("resend", "--study", study.study_instance_uid, "--json")
    assert again.code == 6, again.out
    assert "still queued or awaiting a receipt" in again.json()["error"]
    assert ctl("uplink", "resume").code == 0

    wait_until(
        lambda: (
            sites.uplink_metric("trailerlink_uplink_receipts_total", outcome="delivered")
            >= receipts + 4
        ),
        120,
        "receipts of the resent objects",
        interval=0.25,
    )
    wait_until(
        lambda: sites.trailer.backlog_objects() == 0, 60, "resent objects delivered", interval=0.25
    )
    # Fresh uploads went over the link, and the ledger knew every one of them.
    assert sites.uplink_metric("trailerlink_uplink_uploads_total", outcome="created") == created + 4
    assert central.ingest.metric("trailerlink_ingest_duplicates_total") == duplicates + 4
    assert sites.pacs_stores() == stores
    for sop, sha in study.sent.items():
        assert central.pacs_dataset_sha256(sop) == sha, sop
    study_instances = [
        i
        for i in central.pacs.instances()
        if central.pacs.get(f"/instances/{i}/study")["MainDicomTags"]["StudyInstanceUID"]
        == study.study_instance_uid
    ]
    assert len(study_instances) == 4

    # Audited at the uplink: who and why, and nothing about the woman.
    log = (sites.trailer.logs / "uplink.log").read_text()
    audit = [line for line in log.splitlines() if "study queued again by operator" in line]
    assert len(audit) == 1 and "INC-4711" in audit[0] and study.study_instance_uid in audit[0]
    booking = sites.bookings[0]
    for secret in (booking.patient_name, booking.patient_id, booking.birth_date):
        assert secret not in log

    receipts = sites.delivered_receipts()
    human = ctl("resend", "--study", study.study_instance_uid)
    assert human.code == 0 and "4 objects" in human.out
    # Wait on the receipts, not on the backlog gauge alone: the gauge is refreshed on a
    # timer and may still read the 0 from before this resend.
    wait_until(
        lambda: sites.delivered_receipts() >= receipts + 4,
        120,
        "receipts of the second resend",
        interval=0.25,
    )
    wait_until(
        lambda: sites.trailer.backlog_objects() == 0, 60, "second resend delivered", interval=0.25
    )


def test_a_resend_is_cancelled_while_its_objects_wait(sites: Sites) -> None:
    """`resend --cancel` takes back a resend queued by mistake: the study's objects go
    back to delivered with their delivery times, and nothing of it is left to send."""
    queue_path = sites.trailer.dir / "data" / "uplink" / "queue.sqlite"
    study_uid = next(s for s in _studies(queue_path))
    before = _delivered(queue_path, study_uid)
    assert len(before) == 4 and all(before.values())
    ctl = sites.ctl
    assert ctl("uplink", "pause").code == 0
    try:
        assert ctl("resend", "--study", study_uid, "--reason", "wrong study").code == 0
        cancelled = ctl("resend", "--study", study_uid, "--cancel", "--json")
        assert cancelled.code == 0, cancelled.err
        doc = cancelled.json()
        assert doc["count"] + len(doc["already_sent"]) == 4 and doc["cancelled_by"]
        after = _delivered(queue_path, study_uid)
        taken = {o["sop_instance_uid"] for o in doc["objects"]}
        assert {sop: after[sop] for sop in taken} == {sop: before[sop] for sop in taken}
        again = ctl("resend", "--study", study_uid, "--cancel", "--json")
        assert again.code == 6 and "waiting to be sent again" in again.json()["error"]
    finally:
        assert ctl("uplink", "resume").code == 0
    # Nothing of the cancelled resend is left to send. The backlog gauge is refreshed on a
    # timer, so wait for it to show that rather than leave a stale 4 to the next test.
    wait_until(
        lambda: sites.trailer.backlog_objects() == 0,
        60,
        "backlog gauge at zero after the cancelled resend",
        interval=0.25,
    )
    log = (sites.trailer.logs / "uplink.log").read_text()
    assert "resend cancelled by operator" in log


def _studies(queue_path: Path) -> list[str]:
    queue = SendQueue(queue_path)
    try:
        return sorted({r.study_instance_uid for r in queue.delivered_unpurged()})
    finally:
        queue.close()


def _delivered(queue_path: Path, study_uid: str) -> dict[str, float | None]:
    """SOP Instance UID -> delivery time of a study's delivered rows."""
    queue = SendQueue(queue_path)
    try:
        return {
            r.sop_instance_uid: r.delivered_at
            for r in queue.find_study(study_uid)
            if r.state == "delivered"
        }
    finally:
        queue.close()


def test_bad_resends_are_refused_and_change_nothing(sites: Sites) -> None:
    ctl = sites.ctl
    created = sites.uplink_metric("trailerlink_uplink_uploads_total", outcome="created")
    unknown = ctl("resend", "--study", "1.2.826.0.1.3680043.8.498.99.1", "--json")
    assert unknown.code == 3
    assert "not in this trailer's spool" in unknown.json()["error"]
    malformed = ctl("resend", "--study", "1.2.abc")
    assert malformed.code == 2 and "not a DICOM UID" in malformed.err
    assert ctl("resend").code == 2  # --study is required
    # The uplink refuses a malformed UID and a reason with patient identifiers itself too.
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = sites.trailer.uplink.url("/v1/admin/resend")
    rsp = httpx.post(url, json={"study_uid": "1..2"}, headers=headers)
    assert rsp.status_code == 400
    assert rsp.headers["content-type"].startswith("application/problem+json")
    some_study = sites.bookings[0].study_instance_uid
    nhs = ctl(
        "resend", "--study", some_study, "--reason", f"woman {sites.bookings[0].patient_id} asked"
    )
    assert nhs.code == 2 and "NHS number" in nhs.err
    assert httpx.post(url, json={"study_uid": some_study}).status_code == 401
    assert ctl("resend", "--study", some_study, token=False).code == 4
    assert (
        ctl("resend", "--study", some_study, TRAILERLINKCTL_TOKEN_FILE="/nonexistent/token").code
        == 4
    )
    assert (
        ctl("resend", "--study", some_study, TRAILERLINKCTL_UPLINK_URL="http://127.0.0.1:9").code
        == 5
    )
    # Nothing was queued by any of them.
    assert sites.trailer.backlog_objects() == 0
    assert sites.uplink_metric("trailerlink_uplink_uploads_total", outcome="created") == created


def test_a_purged_study_is_refused_naming_the_purged_objects(sites: Sites) -> None:
    study = sites.deliver(1, seed=5)
    data = sites.trailer.dir / "data"
    # The uplink's own janitor, with the retention over, on the trailer's real files.
    queue = SendQueue(data / "uplink" / "queue.sqlite")
    try:
        Janitor(
            queue,
            data / "outgoing",
            data / "spool",
            retention_seconds=0,
            pressure_free_fraction=0.0,
        ).sweep()
    finally:
        queue.close()
    created = sites.uplink_metric("trailerlink_uplink_uploads_total", outcome="created")
    refused = sites.ctl("resend", "--study", study.study_instance_uid, "--json")
    assert refused.code == 3, refused.out
    error = refused.json()["error"]
    assert "already deleted by the janitor" in error and "4 objects" in error
    assert sum(sop in error for sop in study.sent) == 4  # says which
    rsp = httpx.post(
        sites.trailer.uplink.url("/v1/admin/resend"),
        json={"study_uid": study.study_instance_uid},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    problem = rsp.json()
    assert rsp.status_code == 404 and problem["refusal"] == "purged"
    assert {o["sop_instance_uid"] for o in problem["objects"]} == set(study.sent)
    assert all(o["purged_at"] for o in problem["objects"])
    assert sites.trailer.backlog_objects() == 0
    assert sites.uplink_metric("trailerlink_uplink_uploads_total", outcome="created") == created
