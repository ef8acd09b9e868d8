"""The worklist's DICOM listener is libs/dicomnet's too: a header claiming gigabytes is
aborted unread and counted, a stalled PDU ends at its deadline, and the modality's next
C-ECHO and C-FIND still work."""

from __future__ import annotations

import socket
import struct

from trailerlink_testing.dcmtk import findscu
from trailerlink_testing.hostile import attacker_address, echo_seconds, pdu_claim_flood
from trailerlink_testing.waiting import wait_until
from trailerlink_worklist import metrics
from trailerlink_worklist.app import WorklistApp


def _refusals(reason: str) -> float:
    return metrics.DICOM_REFUSALS.labels(reason)._value.get()


def test_gigabyte_claims_are_aborted_unread_and_the_modality_still_queries(
    scp_app: WorklistApp,
) -> None:
    port = scp_app.scp.port
    before = _refusals("pdu_too_long")
    with pdu_claim_flood(port, 20) as socks:
        for sock in socks:
            sock.settimeout(5)
            try:
                assert sock.recv(1) in (b"\x07", b"")  # A-ABORT, or closed for the slots
            except ConnectionResetError:
                pass
        assert echo_seconds(port, "TRAILERLINK_MWL", calling="MGTRAILER1", times=1)
        result = findscu("127.0.0.1", port, "TRAILERLINK_MWL", ["PatientName"])
        assert result.final_status == "Success"
    assert _refusals("pdu_too_long") > before


def test_a_pdu_abandoned_halfway_is_ended_at_the_deadline(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(dicom_pdu_deadline_seconds=1.0)
    app.scp.start()
    before = _refusals("pdu_deadline")
    sock = socket.create_connection(
        ("127.0.0.1", app.scp.port), source_address=(attacker_address(3), 0)
    )
    sock.sendall(struct.pack(">BBL", 0x01, 0, 200) + b"\x00" * 20)
    sock.settimeout(10)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    wait_until(lambda: _refusals("pdu_deadline") > before, 5, "the deadline refusal counted")
