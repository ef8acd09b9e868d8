"""The ledger's decisions, on SQLite and on a real PostgreSQL: the same tests for both."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from trailerlink_ingest.ledger import ClaimKind, Ledger, Receipt
from trailerlink_testing.postgres import Postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with Postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        made = Ledger(sqlite_path=tmp_path / "ledger.sqlite3")
    else:
        made = Ledger(dsn=request.getfixturevalue("postgres").dsn)
    made.migrate()
    made.migrate()  # idempotent
    yield made
    made.close()


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def _claim(
    ledger: Ledger, uid: str, sha: str, upload: str | None = None, trailer: str = "trailer-01"
) -> ClaimKind:
    kind, _ = ledger.claim(
        sop_instance_uid=uid,
        dataset_sha256=sha,
        trailer_id=trailer,
        study_instance_uid="1.2.3",
        upload_id=upload or uuid.uuid4().hex,
    )
    return kind


def _receipt(
    uid: str, sha: str, upload: str, outcome: str = "delivered", trailer: str = "trailer-01"
) -> Receipt:
    return Receipt(
        upload_id=upload,
        trailer_id=trailer,
        sop_instance_uid=uid,
        study_instance_uid="1.2.3",
        dataset_sha256=sha,
        outcome=outcome,
        stored_transfer_syntax_uid="1.2.840.10008.1.2.1",
        at=time.time(),
    )


def test_first_claim_is_new_then_retry_until_delivered_then_duplicate(ledger):
    uid, sha = _uid(), "a" * 64
    assert _claim(ledger, uid, sha, "u1") is ClaimKind.NEW
    assert _claim(ledger, uid, sha, "u1") is ClaimKind.RETRY
    assert ledger.backlog() >= 1
    ledger.record_outcome(_receipt(uid, sha, "u1" + uid), object_state="delivered")
    assert _claim(ledger, uid, sha, "u2") is ClaimKind.DUPLICATE
    assert ledger.get_object(uid, sha).state == "delivered"


def test_same_uid_other_content_is_a_conflict_and_nothing_is_overwritten(ledger):
    uid = _uid()
    assert _claim(ledger, uid, "a" * 64) is ClaimKind.NEW
    assert _claim(ledger, uid, "b" * 64) is ClaimKind.CONFLICT
    assert _claim(ledger, uid, "b" * 64) is ClaimKind.CONFLICT
    rows = {r.dataset_sha256: r.state for r in ledger.objects(uid)}
    assert rows == {"a" * 64: "pending", "b" * 64: "conflict"}


def test_a_refused_object_may_be_tried_again(ledger):
    uid, sha = _uid(), "c" * 64
    assert _claim(ledger, uid, sha) is ClaimKind.NEW
    ledger.record_outcome(_receipt(uid, sha, uuid.uuid4().hex, "failed"), object_state="refused")
    assert _claim(ledger, uid, sha) is ClaimKind.NEW


def test_one_receipt_per_upload_even_when_recorded_twice(ledger):
    uid, sha, upload = _uid(), "d" * 64, uuid.uuid4().hex
    first = ledger.record_outcome(_receipt(uid, sha, upload))
    again = ledger.record_outcome(_receipt(uid, sha, upload, outcome="failed"))
    assert again == first and again.outcome == "delivered"
    assert ledger.receipt_for_upload(upload) == first


def test_receipts_are_per_trailer_and_page_by_cursor(ledger):
    trailer = f"t-{uuid.uuid4().hex[:8]}"
    uploads = [uuid.uuid4().hex for _ in range(7)]
    for upload in uploads:
        ledger.record_outcome(_receipt(_uid(), "e" * 64, upload, trailer=trailer))
    ledger.record_outcome(_receipt(_uid(), "e" * 64, uuid.uuid4().hex, trailer="someone-else"))
    seen, after = [], 0
    while page := ledger.receipts(trailer, after, limit=3):
        seen += [r.upload_id for r in page]
        after = page[-1].cursor
    assert seen == uploads


def test_concurrent_claims_of_one_uid_decide_once(ledger):
    uid = _uid()
    hashes = [f"{i:064x}" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        kinds = list(pool.map(lambda sha: _claim(ledger, uid, sha), hashes))
    assert kinds.count(ClaimKind.NEW) == 1
    assert kinds.count(ClaimKind.CONFLICT) == 7


@pytest.mark.kafka
def test_ingest_delivers_with_a_postgresql_ledger(postgres, own_ingest, pacs, objects, stored_sha):
    ingest = own_ingest(pacs, ledger_dsn=postgres.dsn)
    obj = objects()
    receipt = ingest.wait_receipt(ingest.upload(obj))
    assert receipt["outcome"] == "delivered"
    assert stored_sha(pacs, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256
    assert ingest.wait_receipt(ingest.upload(obj))["duplicate"] is True


def test_commitment_is_recorded_once_reported_once_and_finished_by_its_receipt(
    ledger: Ledger,
) -> None:
    from trailerlink_ingest.ledger import Commitment

    uid, sha, upload = _uid(), "c" * 64, uuid.uuid4().hex
    assert _claim(ledger, uid, sha, upload) is ClaimKind.NEW
    first = ledger.begin_commitment(
        Commitment(
            _uid(),
            upload,
            uid,
            "1.2.840.10008.5.1.4.1.1.1.2",
            sha,
            "ZXZlbnQ=",
            "1.2.840.10008.1.2.1",
            0,
            time.time(),
        )
    )
    again = ledger.begin_commitment(
        Commitment(
            _uid(),
            upload,
            uid,
            "1.2.840.10008.5.1.4.1.1.1.2",
            sha,
            "ZXZlbnQ=",
            "1.2.840.10008.1.2.1",
            0,
            time.time(),
        )
    )
    assert again.transaction_uid == first.transaction_uid  # a retry asks under the same UID
    [row] = ledger.objects(uid)
    assert row.state == "committing"
    assert _claim(ledger, uid, sha) is ClaimKind.RETRY  # never DUPLICATE before the report
    assert [c.upload_id for c in ledger.commitments_overdue(time.time() + 1)] == [upload]
    assert ledger.commitments_reported() == []

    assert ledger.record_commitment_result(first.transaction_uid, uid, "committed") == 1
    assert ledger.record_commitment_result(first.transaction_uid, uid, "failed:0110") == 0
    [reported] = ledger.commitments_reported()
    assert reported.result == "committed" and ledger.commitments_overdue(time.time() + 1) == []
    ledger.record_outcome(_receipt(uid, sha, upload), object_state="delivered")
    assert ledger.commitments_reported() == []


def test_a_replica_set_without_a_shared_ledger_does_not_start(tmp_path: Path) -> None:
    """TRAILERLINK_LEDGER_SHARED (the central chart sets it) with an empty DSN: the real
    process stops at start with one line naming both variables, instead of giving each
    replica an SQLite ledger of its own (and PACS a second copy of an object)."""
    import os
    import subprocess

    from trailerlink_testing.procs import console_script

    env = {
        **os.environ,
        "TRAILERLINK_LEDGER_SHARED": "true",
        "TRAILERLINK_LEDGER_DSN": "",
        "TRAILERLINK_DATA_DIR": str(tmp_path / "data"),
        "TRAILERLINK_STORAGE_DIR": str(tmp_path / "storage"),
    }
    done = subprocess.run(
        [console_script("trailerlink-ingest")], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "TRAILERLINK_LEDGER_DSN is empty" in lines[0]
    assert "TRAILERLINK_LEDGER_SHARED" in lines[0]
    assert not (tmp_path / "storage").exists()  # nothing made before the refusal
