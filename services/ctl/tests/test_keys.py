"""`trailerlinkctl keys status|rotate|retire` across both real sites (trailerlink_testing
.stack: gateway, codec, uplink with key sync, ingest, Orthanc, two brokers).

One day in file order: a study sealed for the old key waits on the trailer (uplink
paused) while the key is rotated; the trailer's key sync brings the new public key to
the codec, which seals the next study for it without a restart; both studies reach
Orthanc byte-identical; the old key cannot be retired while the trailer reports objects
sealed with it unsent, and can once they are delivered. Bad input changes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from trailerlink_sealed import SealedFormatError, read_sealed_header
from trailerlink_testing.stack import (
    CentralStack,
    SimulatedModality,
    StudyResult,
    TrailerStack,
    synthetic_day,
)
from trailerlink_testing.waiting import wait_until
from trailerlink_uplink.queue import SendQueue

from .conftest import Ctl

pytestmark = pytest.mark.kafka


@dataclass
class Sites:
    central: CentralStack
    trailer: TrailerStack
    modality: SimulatedModality
    ctl: Ctl
    screened: list[StudyResult]

    def status(self) -> dict:
        result = self.ctl("keys", "status", "--json")
        assert result.code == 0, result.err
        return result.json()

    def sealed_key_ids(self) -> dict[str, str]:
        """SOP Instance UID -> key id of every object the codec sealed so far."""
        found = {}
        for path in (self.trailer.dir / "data" / "outgoing").rglob("*.tlsealed"):
            try:
                header = read_sealed_header(path)
            except (OSError, SealedFormatError):
                continue
            found[header.sop_instance_uid] = header.key_id
        return found

    def in_pacs(self, studies: list[StudyResult]) -> bool:
        return all(
            self.central.pacs_dataset_sha256(sop) == sha
            for s in studies
            for sop, sha in s.sent.items()
        )


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[Sites]:
    directory = tmp_path_factory.mktemp("keys")
    bookings = synthetic_day(3, seed=23)
    with (
        CentralStack(
            directory / "central",
            ingest_env={
                "TRAILERLINK_ADMIN_TOKEN_FILE": str(token_file),
                "TRAILERLINK_KEY_RETIRE_SETTLE_SECONDS": "0",
            },
        ) as central,
        TrailerStack(
            directory / "trailer",
            central,
            bookings,
            uplink_env={
                "TRAILERLINK_ADMIN_TOKEN_FILE": str(token_file),
                # The codec reads central.sealing_public: the sync writes there.
                "TRAILERLINK_SEALING_KEYS_SYNC_DIR": str(central.sealing_public),
                "TRAILERLINK_KEYS_POLL_SECONDS": "0.5",
            },
        ) as trailer,
        SimulatedModality(trailer, directory / "modality", rows=256, columns=208) as modality,
    ):
        modality.wait_for_worklist(3)
        ctl = Ctl(
            {
                "TRAILERLINKCTL_TOKEN_FILE": str(token_file),
                "TRAILERLINKCTL_INGEST_URL": central.ingest.url(""),
                "TRAILERLINKCTL_UPLINK_URL": trailer.uplink.url(""),
            }
        )
        yield Sites(central, trailer, modality, ctl, [])


def test_rotation_new_objects_use_the_new_key_old_ones_still_open(sites: Sites) -> None:
    central = sites.central
    before_doc = sites.status()
    old = before_doc["current_key_id"]
    assert [k["key_id"] for k in before_doc["keys"]] == [old]
    assert before_doc["keys"][0]["current"] and not before_doc["keys"][0]["retirable"]
    trailer_id = central.trailer_id

    def report() -> dict:
        [t] = [t for t in sites.status()["trailers"] if t["trailer_id"] == trailer_id]
        return t

    wait_until(lambda: report()["reported_at"] is not None, 60, "the trailer's key report")

    # A study sealed for the old key, held on the trailer.
    assert sites.ctl("uplink", "pause").code == 0
    first, second = sites.modality.query_worklist()[:2]
    before = sites.modality.screen(first, seed=1)
    sites.screened.append(before)
    assert len(before.sent) == 4
    wait_until(
        lambda: report()["unsent_by_key_id"].get(old) == 4,
        90,
        "the trailer reports 4 objects sealed for the old key unsent",
    )

    rotated = sites.ctl("keys", "rotate", "--json")
    assert rotated.code == 0, rotated.err
    new = rotated.json()["key_id"]
    assert new != old and rotated.json()["previous_key_id"] == old
    private = central.sealing_private / f"{new}.pem"
    assert private.exists() and (private.stat().st_mode & 0o777) == 0o600
    marker = central.sealing_public / "current"
    wait_until(
        lambda: marker.exists() and marker.read_text().strip() == new,
        30,
        "the trailer's key sync marks the new key current",
    )
    assert (central.sealing_public / f"{old}.pem").exists()  # still listed, still known

    refused = sites.ctl("keys", "retire", old)
    assert refused.code == 6 and "unsent" in refused.err, refused.err
    assert (central.sealing_private / f"{old}.pem").exists()

    after = sites.modality.screen(second, seed=2)
    sites.screened.append(after)
    wanted = set(before.sent) | set(after.sent)
    wait_until(lambda: wanted <= set(sites.sealed_key_ids()), 90, "both studies sealed")
    sealed = sites.sealed_key_ids()
    assert {sealed[sop] for sop in before.sent} == {old}  # sealed before the rotation
    assert {sealed[sop] for sop in after.sent} == {new}  # the codec followed, no restart

    assert sites.ctl("uplink", "resume").code == 0
    wait_until(
        lambda: sites.in_pacs([before, after]), 180, "both studies in Orthanc byte-identical"
    )
    wait_until(lambda: before.confirmed and after.confirmed, 60, "storage commitment")

    def old_retirable() -> bool:
        [key] = [k for k in sites.status()["keys"] if k["key_id"] == old]
        return key["retirable"]

    wait_until(old_retirable, 60, "nothing sealed for the old key outstanding")
    retired = sites.ctl("keys", "retire", old, "--json")
    # The first study's 4 spool copies, delivered, could be resent until now.
    assert retired.code == 0 and retired.json() == {
        "key_id": old,
        "retired": True,
        "unresendable_spool_copies": 4,
    }
    assert not (central.sealing_private / f"{old}.pem").exists()
    assert [k["key_id"] for k in sites.status()["keys"]] == [new]
    wait_until(
        lambda: not (central.sealing_public / f"{old}.pem").exists(),
        30,
        "the trailer forgets the retired public key",
    )


def test_a_study_sealed_for_a_retired_key_fails_alone_and_the_next_woman_reaches_pacs(
    sites: Sites,
) -> None:
    """The wedge support met: after rotate + retire, the first study (sealed for the
    retired key) queued again. `resend` now refuses it; queued all the same (as a resend
    accepted before the uplink heard of the retirement would be), the ingest refuses each
    object once for good and the uplink fails them alone, while the next woman's images
    reach PACS behind them."""
    central, trailer = sites.central, sites.trailer
    before = sites.screened[0]
    study_uid = before.study_instance_uid
    refused = sites.ctl("resend", "--study", study_uid)
    assert refused.code == 6 and "retired" in refused.err, refused.err

    queue = SendQueue(trailer.dir / "data" / "uplink" / "queue.sqlite")
    try:
        rows = queue.resend_study(study_uid, "as a resend the uplink accepted")
    finally:
        queue.close()
    assert len(rows) == 4 and {r.state for r in rows} == {"queued"}
    done = {s.accession_number for s in sites.screened}
    third = next(i for i in sites.modality.query_worklist() if str(i.AccessionNumber) not in done)
    nxt = sites.modality.screen(third, seed=3)
    assert len(nxt.sent) == 4
    wait_until(lambda: sites.in_pacs([nxt]), 180, "the next woman's images in PACS")

    def failed() -> float:
        return trailer.uplink.metric(
            "trailerlink_uplink_objects_refused_total", reason="unknown_key"
        )

    wait_until(lambda: failed() == 4, 60, "the 4 resent objects failed for good")
    queue = SendQueue(trailer.dir / "data" / "uplink" / "queue.sqlite")
    try:
        states = {r.sop_instance_uid: r.state for r in queue.find_study(study_uid)}
        reasons = {r.failure for r in queue.find_study(study_uid)}
    finally:
        queue.close()
    assert states == dict.fromkeys(before.sent, "failed")
    assert all(r and "unknown_key" in r for r in reasons)
    # Each was asked about once, never retried; the ingest counted each by trailer.
    assert (
        central.ingest.metric(
            "trailerlink_ingest_upload_refusals_total",
            trailer=central.trailer_id,
            reason="unknown_key",
        )
        == 4
    )
    wait_until(
        lambda: trailer.uplink.metric("trailerlink_uplink_failed_objects") == 4,
        30,
        "the failed-objects gauge",
    )
    ingest_log = (central.logs / "ingest.log").read_text()
    assert ingest_log.count("upload creation refused") == 4
    assert not any(sop in ingest_log for sop in before.sent)

    # Support sees it in the data centre: the trailer's heartbeat carries the count.
    def in_status() -> dict | None:
        result = sites.ctl(
            "status", central.trailer_id, "--json", TRAILERLINKCTL_MONITOR_URL=central.fleet.url("")
        )
        return result.json()["trailers"][0] if result.code == 0 else None

    wait_until(
        lambda: (in_status() or {}).get("failed_objects") == 4,
        60,
        "trailerlinkctl status shows the 4 failed objects",
    )
    shown = sites.ctl(
        "status", central.trailer_id, TRAILERLINKCTL_MONITOR_URL=central.fleet.url("")
    )
    assert shown.code == 0 and "failures" in shown.out, shown.out


def test_bad_input_is_refused_and_changes_nothing(sites: Sites) -> None:
    central = sites.central
    before = sorted(os.listdir(central.sealing_private))
    state_file = central.sealing_private / "keys-state.json"
    state = state_file.read_bytes() if state_file.exists() else None
    current = sites.status()["current_key_id"]

    no_token = sites.ctl("keys", "rotate", token=False)
    assert no_token.code == 4 and "token" in no_token.err
    wrong_token = central.dir / "wrong-token"
    wrong_token.write_text("not-the-token\n")
    wrong = sites.ctl("keys", "rotate", TRAILERLINKCTL_TOKEN_FILE=str(wrong_token))
    assert wrong.code == 4 and "not accepted" in wrong.err
    unknown = sites.ctl("keys", "retire", "dc-0000000000000000")
    assert unknown.code == 3 and "unknown sealing key" in unknown.err
    malformed = sites.ctl("keys", "retire", "../../etc/passwd")
    assert malformed.code == 2 and "not a key id" in malformed.err
    is_current = sites.ctl("keys", "retire", current, "--json")
    assert is_current.code == 6 and "current" in is_current.json()["error"]

    assert sorted(os.listdir(central.sealing_private)) == before
    assert (state_file.read_bytes() if state_file.exists() else None) == state
    assert sites.status()["current_key_id"] == current
