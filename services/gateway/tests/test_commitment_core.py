"""Storage commitment decisions and their durable store, without DICOM networking."""

from __future__ import annotations

from pathlib import Path

from trailerlink_gateway.commitment import (
    CommitItem,
    CommitmentStore,
    CommitRequest,
    Outcome,
    judge,
)
from trailerlink_gateway.statuses import CommitFailure
from trailerlink_spool.index import STATUS_CONFLICT, STATUS_RECEIVED, SpoolEntry

MG = "1.2.840.10008.5.1.4.1.1.1.2"


def copy(
    uid: str, sha: str = "a" * 64, status: str = STATUS_RECEIVED, sop_class: str = MG
) -> SpoolEntry:
    return SpoolEntry(
        "r" + uid,
        uid,
        sop_class,
        "1.2",
        "1.2.1",
        "1.2.840.10008.1.2.1",
        "MG1",
        10,
        "f" * 64,
        5,
        sha,
        80,
        f"objects/x/{uid}.tlspool",
        "k",
        1.0,
        1,
        status,
    )


def request(*uids: str, deadline: float = 1000.0) -> CommitRequest:
    return CommitRequest("9.9.9", "MG1", 0.0, deadline, tuple(CommitItem(MG, u) for u in uids))


def test_waits_until_every_instance_is_in_pacs() -> None:
    req = request("1.1", "1.2")
    copies = {"1.1": [copy("1.1")], "1.2": [copy("1.2")]}
    half = {"1.1": [Outcome(True, "a" * 64)]}
    verdict = judge(req, copies, half, now=10)
    assert not verdict.ready and [i.sop_instance_uid for i in verdict.pending] == ["1.2"]
    both = {**half, "1.2": [Outcome(True, "a" * 64)]}
    verdict = judge(req, copies, both, now=10)
    assert verdict.ready and len(verdict.committed) == 2 and verdict.event_type == 1


def test_never_received_is_failed_without_holding_the_answer() -> None:
    req = request("1.1", "7.7")
    verdict = judge(req, {"1.1": [copy("1.1")]}, {"1.1": [Outcome(True, "a" * 64)]}, now=1)
    assert verdict.ready and verdict.event_type == 2
    assert verdict.failed == ((CommitItem(MG, "7.7"), CommitFailure.NO_SUCH_OBJECT_INSTANCE),)


def test_delivery_of_other_bytes_does_not_commit() -> None:
    req = request("1.1")
    verdict = judge(req, {"1.1": [copy("1.1")]}, {"1.1": [Outcome(True, "b" * 64)]}, now=1)
    assert not verdict.ready


def test_permanent_failure_fails_and_transient_failure_waits() -> None:
    req = request("1.1")
    copies = {"1.1": [copy("1.1")]}
    transient = judge(req, copies, {"1.1": [Outcome(False, "a" * 64, 6, False)]}, now=1)
    assert not transient.ready
    permanent = judge(req, copies, {"1.1": [Outcome(False, "a" * 64, 3, True)]}, now=1)
    assert permanent.failed == ((CommitItem(MG, "1.1"), CommitFailure.PROCESSING_FAILURE),)


def test_conflicting_copy_and_wrong_class_fail() -> None:
    req = request("1.1", "1.2")
    copies = {
        "1.1": [copy("1.1"), copy("1.1", "c" * 64, STATUS_CONFLICT)],
        "1.2": [copy("1.2", sop_class="1.2.840.10008.5.1.4.1.1.7")],
    }
    verdict = judge(req, copies, {"1.1": [Outcome(True, "a" * 64)]}, now=1)
    assert verdict.ready
    assert [r for _, r in verdict.failed] == [
        CommitFailure.PROCESSING_FAILURE,
        CommitFailure.CLASS_INSTANCE_CONFLICT,
    ]


def test_deadline_reports_outstanding_as_failed_for_now() -> None:
    req = request("1.1", "1.2", deadline=100)
    copies = {"1.1": [copy("1.1")], "1.2": [copy("1.2")]}
    outcomes = {"1.1": [Outcome(True, "a" * 64)]}
    assert not judge(req, copies, outcomes, now=99).ready
    verdict = judge(req, copies, outcomes, now=100)
    assert verdict.ready and len(verdict.committed) == 1
    assert verdict.failed == ((CommitItem(MG, "1.2"), CommitFailure.RESOURCE_LIMITATION),)


def test_requests_and_outcomes_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "commitment.sqlite"
    store = CommitmentStore(path)
    assert store.add_request("9.9", "MG1", [CommitItem(MG, "1.1")], deadline_at=50, now=1)
    assert not store.add_request("9.9", "MG1", [CommitItem(MG, "1.1")], deadline_at=50)
    store.record_outcome("1.1", Outcome(True, "a" * 64))
    store.record_outcome("1.1", Outcome(True, "a" * 64))  # a replayed event
    store.db.close()
    again = CommitmentStore(path)
    [req] = again.open_requests()
    assert req.transaction_uid == "9.9" and req.items == (CommitItem(MG, "1.1"),)
    assert again.outcomes(["1.1"]) == {"1.1": [Outcome(True, "a" * 64)]}
    again.mark_answered("9.9", 1)
    assert again.open_requests() == [] and again.is_answered("9.9")
    # Asking again with the same Transaction UID reopens it.
    assert again.add_request("9.9", "MG1", [CommitItem(MG, "1.1")], deadline_at=60)
    assert len(again.open_requests()) == 1
