"""`POST /v1/admin/resend` over a real send queue and a real gateway spool index (SQLite):
all of a study or nothing, and every refusal names its reason and changes nothing.
(The end-to-end run through Orthanc is services/ctl/tests/test_resend.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from trailerlink_spool.index import SpoolEntry, SpoolIndex
from trailerlink_spool.layout import SpoolLayout
from trailerlink_uplink.admin_api import Resender, add_resend_route
from trailerlink_uplink.queue import (
    STATE_DELIVERED,
    STATE_QUEUED,
    STATE_UPLOADED,
    NewObject,
    SendQueue,
)

from .conftest import Outgoing, synthetic_uid

TOKEN = "resend-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Trailerlink-Actor": "support.jo"}


@dataclass
class Trailer:
    queue: SendQueue
    index: SpoolIndex
    outgoing: Outgoing
    client: TestClient
    woken: list[int]

    def study(self, n: int = 3, *, delivered: bool = True) -> tuple[str, list[NewObject]]:
        """A sealed, queued (and by default delivered) study, recorded in the spool index."""
        study = synthetic_uid()
        objs = [self.outgoing.sealed(100, study) for _ in range(n)]
        for obj in objs:
            self.queue.enqueue(obj)
            self.index.record(_entry(obj), lambda *_: [])
        if delivered:
            for row in self.queue.find_study(study):
                self.queue.mark_uploaded(row.id)
                self.queue.mark_delivered(row.id, 1_700_000_100.0)
        return study, objs

    def resend(self, study: str, **body: object) -> object:
        return self.client.post("/v1/admin/resend", json={"study_uid": study, **body}, headers=AUTH)

    def states(self, study: str) -> list[str]:
        return [r.state for r in self.queue.find_study(study)]


def _entry(obj: NewObject) -> SpoolEntry:
    return SpoolEntry(
        receipt_id=obj.sealed_path.rsplit(".", 2)[1],
        sop_instance_uid=obj.sop_instance_uid,
        sop_class_uid=obj.sop_class_uid,
        study_instance_uid=obj.study_instance_uid,
        series_instance_uid=obj.series_instance_uid,
        transfer_syntax_uid=obj.transfer_syntax_uid,
        calling_ae_title="MG1",
        file_size=100,
        file_sha256=obj.file_sha256,
        dataset_size=90,
        dataset_sha256=obj.dataset_sha256,
        stored_size=128,
        spool_path=obj.sealed_path.removesuffix(".tlsealed") + ".tlspool",
        key_id="spool-1",
        received_at=obj.received_at,
        number_of_frames=1,
    )


held: dict[str, frozenset[str]] = {}
"""What key sync last heard the ingest holds (none: not known)."""


@pytest.fixture
def trailer(tmp_path: Path, queue: SendQueue, outgoing: Outgoing) -> Iterator[Trailer]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    index = SpoolIndex(SpoolLayout(tmp_path / "spool"))
    woken: list[int] = []
    held.clear()
    app = FastAPI()
    add_resend_route(
        app,
        Resender(queue, outgoing.root, tmp_path / "spool", held_keys=lambda: held.get("keys")),
        lambda: woken.append(1),
        token,
    )
    with TestClient(app) as client:
        yield Trailer(queue, index, outgoing, client, woken)


def test_a_delivered_study_is_queued_again_whole_keeping_its_identity(trailer: Trailer) -> None:
    study, objs = trailer.study(3)
    before = {r.sop_instance_uid: r for r in trailer.queue.find_study(study)}
    rsp = trailer.resend(study, reason="PACS restore")
    assert rsp.status_code == 200, rsp.text
    doc = rsp.json()
    assert doc["count"] == 3 and doc["requested_by"] == "support.jo"
    assert doc["bytes"] == 300 and doc["reason"] == "PACS restore"
    assert trailer.woken == [1]
    for row in trailer.queue.find_study(study):
        old = before[row.sop_instance_uid]
        assert row.state == STATE_QUEUED and row.upload_url is None
        assert row.delivered_at is None and row.attempts == 0
        assert (row.id, row.sealed_path, row.dataset_sha256, row.key_id, row.sealed_sha256) == (
            old.id,
            old.sealed_path,
            old.dataset_sha256,
            old.key_id,
            old.sealed_sha256,
        )
    # the sender takes them as any queued study; nothing else was touched
    assert {trailer.queue.next_object().sop_instance_uid} <= {o.sop_instance_uid for o in objs}


@pytest.mark.parametrize(
    ("case", "status", "refusal"),
    [
        ("unknown", 404, "unknown"),
        ("purged", 404, "purged"),
        ("missing", 404, "missing"),
        ("in_flight", 409, "busy"),
        ("unsealed", 409, "unsealed"),
    ],
)
def test_refusals_change_nothing(trailer: Trailer, case: str, status: int, refusal: str) -> None:
    other, _ = trailer.study(2)  # an innocent bystander
    study, objs = trailer.study(3, delivered=case != "in_flight")
    if case == "unknown":
        study = synthetic_uid()
    elif case == "purged":
        row = trailer.queue.find_study(study)[1]
        trailer.queue.mark_purged(row.id)
    elif case == "missing":
        (trailer.outgoing.root / objs[0].sealed_path).unlink()
    elif case == "unsealed":  # received by the gateway, not yet sealed by the codec
        extra = trailer.outgoing.sealed(100, study)
        trailer.index.record(_entry(extra), lambda *_: [])
    before = [trailer.states(study), trailer.states(other)]
    rsp = trailer.resend(study)
    assert rsp.status_code == status, rsp.text
    assert rsp.headers["content-type"].startswith("application/problem+json")
    problem = rsp.json()
    assert problem["refusal"] == refusal and study in problem["detail"]
    if case == "purged":
        assert [o["sop_instance_uid"] for o in problem["objects"]] == [objs[1].sop_instance_uid]
        assert objs[1].sop_instance_uid in problem["detail"]
    assert [trailer.states(study), trailer.states(other)] == before
    assert trailer.woken == []


def test_bad_requests_are_refused(trailer: Trailer) -> None:
    study, _ = trailer.study(1)
    assert trailer.resend("1.2.x").status_code == 400
    assert trailer.resend("1." + "2" * 70).status_code == 400
    refused = trailer.resend(study, reason="patient 943 476 5919 called")
    assert refused.status_code == 400 and "NHS number" in refused.json()["detail"]
    assert trailer.resend(study, reason="born 01/02/1960").status_code == 400
    assert trailer.resend(study, reason="x" * 201).status_code == 422
    no_token = trailer.client.post("/v1/admin/resend", json={"study_uid": study})
    assert no_token.status_code == 401
    wrong = trailer.client.post(
        "/v1/admin/resend", json={"study_uid": study}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 403
    assert trailer.states(study) == [STATE_DELIVERED]
    # a UID-bearing reason is fine: UIDs are not patient data
    ok = trailer.resend(study, reason="restore of 1.2.826.0.1.3680043.8.498.1234567890")
    assert ok.status_code == 200, ok.text


def test_a_study_sealed_for_a_retired_key_is_refused_and_nothing_changes(trailer: Trailer) -> None:
    study, objs = trailer.study(2)
    other, _ = trailer.study(1)
    held["keys"] = frozenset({"dc-fedcba9876543210"})  # the study's key was retired
    rsp = trailer.resend(study)
    assert rsp.status_code == 409, rsp.text
    problem = rsp.json()
    assert problem["refusal"] == "key_retired" and "modality" in problem["detail"]
    assert {o["key_id"] for o in problem["objects"]} == {objs[0].key_id}
    assert trailer.states(study) == [STATE_DELIVERED] * 2 and trailer.woken == []
    held["keys"] = frozenset({"dc-fedcba9876543210", objs[0].key_id})  # still held
    assert trailer.resend(other).status_code == 200


def test_a_resend_can_be_cancelled_while_its_objects_wait(trailer: Trailer) -> None:
    study, _ = trailer.study(3)
    before = {r.id: (r.state, r.delivered_at, r.failure) for r in trailer.queue.find_study(study)}
    assert trailer.resend(study, reason="PACS restore").status_code == 200
    first = trailer.queue.find_study(study)[0]
    trailer.queue.mark_uploaded(first.id)  # one already went: it keeps its way
    rsp = trailer.client.post("/v1/admin/resend/cancel", json={"study_uid": study}, headers=AUTH)
    assert rsp.status_code == 200, rsp.text
    doc = rsp.json()
    assert doc["count"] == 2 and doc["cancelled_by"] == "support.jo"
    assert [o["sop_instance_uid"] for o in doc["already_sent"]] == [first.sop_instance_uid]
    rows = {r.id: r for r in trailer.queue.find_study(study)}
    assert rows[first.id].state == STATE_UPLOADED
    for object_id, (state, delivered_at, failure) in before.items():
        if object_id != first.id:
            assert (rows[object_id].state, rows[object_id].delivered_at) == (state, delivered_at)
            assert rows[object_id].failure == (failure or "resend cancelled: by support.jo")
    assert trailer.queue.next_object() is None  # nothing of it left to send
    again = trailer.client.post("/v1/admin/resend/cancel", json={"study_uid": study}, headers=AUTH)
    assert again.status_code == 409 and again.json()["refusal"] == "not_resent"
