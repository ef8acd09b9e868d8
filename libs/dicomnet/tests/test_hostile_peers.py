"""Peers that lie, stall or flood, against a real bounded server: each is ended at once
or at its deadline, is reported with its reason, and never stops the modality's next
C-ECHO."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation, Verification
from trailerlink_dicomnet import limits as lim
from trailerlink_testing.dicom import dataset_bytes, write_synthetic
from trailerlink_testing.waiting import wait_until

from .conftest import (
    A_ABORT_TYPE,
    LIMITS,
    SERVER_AE,
    Server,
    associate_rq,
    connect,
    echo,
    read_until_closed,
)


def _header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def _refused(server: Server, reason: str) -> None:
    wait_until(lambda: reason in server.refusals.reasons(), 5, f"refusal {reason} reported")


@pytest.mark.parametrize("pdu_type", [0x01, 0x02, 0x04])
def test_a_header_claiming_4_gib_is_aborted_before_a_byte_of_it_is_read(
    bounded: Server, pdu_type: int
) -> None:
    sock = connect(bounded.port)
    sock.sendall(_header(pdu_type, 0xFFFFFFFF))
    received = read_until_closed(sock, 2)
    assert received[:1] == bytes((A_ABORT_TYPE,))
    _refused(bounded, lim.PDU_TOO_LONG)
    assert echo(bounded.port)


@pytest.mark.parametrize(
    ("pdu_type", "length", "reason"),
    [
        (0x00, 10, lim.PDU_UNKNOWN_TYPE),
        (0x08, 10, lim.PDU_UNKNOWN_TYPE),
        (0xFF, 0xFFFFFFFF, lim.PDU_UNKNOWN_TYPE),
        (0x03, 5, lim.PDU_BAD_LENGTH),  # A-ASSOCIATE-RJ is 4 long
        (0x05, 0xFFFF, lim.PDU_BAD_LENGTH),  # A-RELEASE-RQ is 4 long
        (0x06, 0, lim.PDU_BAD_LENGTH),
        (0x07, 3, lim.PDU_BAD_LENGTH),
        (0x01, 10, lim.PDU_BAD_LENGTH),  # shorter than any A-ASSOCIATE-RQ
        (0x04, 2, lim.PDU_BAD_LENGTH),  # no room for a PDV item
        (0x04, LIMITS.max_associate_bytes + 1, lim.PDU_TOO_LONG),  # before acceptance
    ],
)
def test_every_pdu_type_and_length_field_is_checked(
    bounded: Server, pdu_type: int, length: int, reason: str
) -> None:
    sock = connect(bounded.port)
    sock.sendall(_header(pdu_type, length))
    read_until_closed(sock, 2)
    _refused(bounded, reason)


def test_a_pdu_started_and_abandoned_is_ended_at_the_deadline(bounded: Server) -> None:
    """20 bytes of an A-ASSOCIATE-RQ, then silence (before: open past 120 s)."""
    sock = connect(bounded.port)
    sock.sendall(associate_rq()[:20])
    started = time.monotonic()
    read_until_closed(sock, LIMITS.pdu_deadline_seconds + 3)
    assert time.monotonic() - started >= LIMITS.pdu_deadline_seconds * 0.9
    _refused(bounded, lim.PDU_DEADLINE)


def test_a_slowloris_dripping_one_byte_at_a_time_is_ended_at_the_deadline(bounded: Server) -> None:
    sock = connect(bounded.port)
    rq = associate_rq()
    started = time.monotonic()
    closed = False
    for byte in rq:  # one byte every 0.2 s: never idle long, never done in time
        try:
            sock.sendall(bytes((byte,)))
        except OSError:
            closed = True
            break
        if time.monotonic() - started > LIMITS.pdu_deadline_seconds + 3:
            break
        time.sleep(0.2)  # the attacker's pace, not synchronisation
    assert closed or read_until_closed(sock, 3) is not None
    _refused(bounded, lim.PDU_DEADLINE)
    assert echo(bounded.port)


def test_a_whole_associate_rq_by_hand_is_accepted(bounded: Server) -> None:
    """The hand-built RQ the other cases cut up is itself valid."""
    sock = connect(bounded.port)
    sock.sendall(associate_rq())
    sock.settimeout(5)
    assert sock.recv(1) == b"\x02"  # A-ASSOCIATE-AC
    sock.close()


def test_a_calling_ae_of_spaces_is_refused_with_a_line_not_a_traceback(
    bounded: Server, caplog: pytest.LogCaptureFixture
) -> None:
    sock = connect(bounded.port)
    sock.sendall(associate_rq(calling=b" " * 16))
    received = read_until_closed(sock, 3)
    assert received[:1] in (b"\x03", b"\x07")  # rejected or aborted, never accepted
    assert not [r for r in caplog.records if r.exc_info]


def test_connections_over_the_per_peer_limit_are_closed_and_the_modality_still_gets_in(
    bounded: Server,
) -> None:
    hogs = [
        connect(bounded.port, source="127.0.0.2") for _ in range(LIMITS.max_connections_per_peer)
    ]
    extra = connect(bounded.port, source="127.0.0.2")
    assert read_until_closed(extra, 2) == b""
    _refused(bounded, lim.TOO_MANY_FROM_PEER)
    assert echo(bounded.port)  # from 127.0.0.1: its own slots
    for hog in hogs:
        hog.close()
    # The hogs' slots come back once they are gone.
    wait_until(
        lambda: bounded.server.slots.open_connections() == 0, 10, "every hog's slot given back"
    )


def test_p_data_on_an_accepted_association_must_add_up(bounded: Server) -> None:
    ae = AE(ae_title="MG1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", bounded.port, ae_title=SERVER_AE)
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    # A PDV item claiming more than its PDU holds.
    raw.sendall(_header(0x04, 10) + struct.pack(">L", 100) + b"\x01\x03" + b"\x00" * 4)
    wait_until(lambda: assoc.is_aborted or not assoc.is_established, 5, "association ended")
    _refused(bounded, lim.PDU_MALFORMED)


def test_p_data_longer_than_advertised_is_refused_after_acceptance(bounded: Server) -> None:
    ae = AE(ae_title="MG1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", bounded.port, ae_title=SERVER_AE)
    assert assoc.is_established
    assert assoc.acceptor.maximum_length == LIMITS.max_pdu_bytes  # what we advertised
    assoc.dul.socket.socket.sendall(_header(0x04, LIMITS.max_pdu_bytes + 1))
    wait_until(lambda: not assoc.is_established, 5, "association ended")
    _refused(bounded, lim.PDU_TOO_LONG)


def test_seeded_random_bytes_never_stop_the_server(bounded: Server) -> None:
    """200 seeded bursts of random bytes (a port scan, line noise): every connection
    ends within the deadline and the modality's C-ECHO works after each batch."""
    rng = random.Random(19)
    for batch in range(10):
        socks = []
        for _ in range(20):
            sock = connect(bounded.port, source=f"127.0.1.{batch + 1}")
            sock.sendall(rng.randbytes(rng.choice((1, 6, 64, 1024))))
            socks.append(sock)
            if len(socks) == LIMITS.max_connections_per_peer:
                for s in socks:
                    read_until_closed(s, LIMITS.pdu_deadline_seconds + 3)
                socks = []
        for s in socks:
            read_until_closed(s, LIMITS.pdu_deadline_seconds + 3)
        assert echo(bounded.port)
    assert not bounded.stored


def test_an_unidentified_peer_can_make_the_server_buffer_no_more_than_the_rq_limit(
    bounded: Server,
) -> None:
    """Before acceptance, even a PDU within the limit is only read once whole: its
    buffer is the RQ limit at most (the header of anything longer is refused)."""
    sock = connect(bounded.port)
    sock.sendall(_header(0x04, LIMITS.max_associate_bytes) + b"\x00" * 100)
    sock.close()
    sock = connect(bounded.port)
    sock.sendall(_header(0x04, LIMITS.max_associate_bytes + 1))
    read_until_closed(sock, 2)
    _refused(bounded, lim.PDU_TOO_LONG)


def test_a_connection_that_never_speaks_is_closed_by_the_acse_timer(server_factory) -> None:
    running = server_factory()
    running.server.ae.acse_timeout = 1
    sock = connect(running.port)
    read_until_closed(sock, 15)
    assert echo(running.port)


def test_the_slot_of_a_refused_connection_is_given_back(bounded: Server) -> None:
    for _ in range(LIMITS.max_connections_per_peer * 3):
        sock = connect(bounded.port, source="127.0.0.3")
        sock.sendall(_header(0xFF, 0))
        read_until_closed(sock, 2)
    wait_until(lambda: bounded.server.slots.open_connections() == 0, 5, "slots given back")
    assert lim.TOO_MANY_FROM_PEER not in bounded.refusals.reasons()


def test_a_store_still_arrives_whole(bounded: Server, tmp_path: Path) -> None:
    """The bounded reader hands pynetdicom the same data set bytes."""
    obj = write_synthetic(tmp_path / "mg.dcm", rows=256, columns=256, seed=7)
    ae = AE(ae_title="MG1")
    ae.add_requested_context(
        DigitalMammographyXRayImageStorageForPresentation, ExplicitVRLittleEndian
    )
    assoc = ae.associate("127.0.0.1", bounded.port, ae_title=SERVER_AE, max_pdu=16384)
    assert assoc.is_established
    status = assoc.send_c_store(obj.path)
    assoc.release()
    assert status.Status == 0
    assert len(bounded.stored) == 1
    assert bounded.stored[0] == dataset_bytes(obj.path)


def test_an_idle_accepted_association_is_ended_by_the_network_timeout(server_factory) -> None:
    running = server_factory()
    running.server.ae.network_timeout = 1
    ae = AE(ae_title="MG1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running.port, ae_title=SERVER_AE)
    assert assoc.is_established
    wait_until(lambda: not assoc.is_established, 10, "the idle association ended by the server")
    assert echo(running.port)


def test_silent_connections_do_not_take_association_slots(server_factory) -> None:
    """pynetdicom counted every connection's thread against its association limit, so
    a few silent connections made the modality's association 'Local Limit Exceeded'."""
    from dataclasses import replace

    running = server_factory(limits=replace(LIMITS, max_associations=2))
    silent = [connect(running.port, source=f"127.0.4.{n + 1}") for n in range(4)]
    try:
        assert echo(running.port)
    finally:
        for sock in silent:
            sock.close()


def test_identified_associations_over_the_limit_are_rejected_transiently(server_factory) -> None:
    from dataclasses import replace

    running = server_factory(limits=replace(LIMITS, max_associations=2))
    ae = AE(ae_title="MG1")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", running.port, ae_title=SERVER_AE) for _ in range(2)]
    assert all(a.is_established for a in held)
    third = ae.associate("127.0.0.1", running.port, ae_title=SERVER_AE)
    assert third.is_rejected
    assert third.acceptor.primitive.result_source == 0x03  # provider (presentation)
    assert third.acceptor.primitive.diagnostic == 0x02  # local limit exceeded
    for assoc in held:
        assoc.release()
    wait_until(lambda: echo(running.port), 10, "a slot free again after the release")
