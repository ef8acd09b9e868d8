"""The hand-built C-FIND-RSP command sets are byte for byte what pynetdicom builds, and
the PDVs fit the peer's maximum PDU (findscu against the SCP in test_cfind.py checks
the same path end to end)."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.sop_class import ModalityWorklistInformationFind
from trailerlink_worklist import fastfind


def _primitive(status: int, identifier: bytes | None, message_id: int) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = ModalityWorklistInformationFind
    rsp.Status = status
    rsp.Identifier = BytesIO(identifier) if identifier is not None else None
    return rsp


def _pynetdicom_pdvs(primitive: C_FIND, max_pdu: int) -> list[bytes]:
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    return [
        value
        for pdata in message.encode_msg(1, max_pdu)
        for _cx, value in pdata.presentation_data_value_list
    ]


@pytest.mark.parametrize(
    "status,identifier",
    [
        (0xFF00, b"\x08\x00\x50\x00\x08\x00\x00\x00ACC00001" * 40),  # pending, an answer
        (0xFF01, b"\x10\x00\x10\x00\x0a\x00\x00\x00TEST^ALPHA"),
        (0x0000, None),  # success
        (0xFE00, None),  # cancel
    ],
)
@pytest.mark.parametrize("max_pdu", [0, 64, 131072])
@pytest.mark.parametrize("message_id", [1, 7, 65535])
def test_same_bytes_as_pynetdicom(
    status: int, identifier: bytes | None, max_pdu: int, message_id: int
) -> None:
    primitive = _primitive(status, identifier, message_id)
    ours = fastfind.pdata_for(primitive, 1, max_pdu)
    pdvs = [value for pdata in ours for _cx, value in pdata.presentation_data_value_list]
    assert pdvs == _pynetdicom_pdvs(_primitive(status, identifier, message_id), max_pdu)
    for pdata in ours:
        assert all(cx == 1 for cx, _v in pdata.presentation_data_value_list)
        if max_pdu:  # PDV item: length (4), context id (1), value
            assert sum(len(v) + 5 for _cx, v in pdata.presentation_data_value_list) <= max_pdu


def test_command_and_small_answer_share_one_pdu() -> None:
    primitive = _primitive(0xFF00, b"\x08\x00\x50\x00\x08\x00\x00\x00ACC00001", 3)
    ours = fastfind.pdata_for(primitive, 5, 16384)
    assert len(ours) == 1
    headers = [value[0] for _cx, value in ours[0].presentation_data_value_list]
    assert headers == [0x03, 0x02]  # last command fragment, then last data set fragment


def test_associations_send_without_nagle_and_their_dul_waits_on_the_socket(scp_app) -> None:  # type: ignore[no-untyped-def]
    """A real association with the SCP: its socket has TCP_NODELAY (without it the
    last answer of every C-FIND waited 40 ms for the modality's delayed ACK), its DUL
    waits on the socket, answers still arrive, and the wake-up pipe is closed once the
    association is gone."""
    import gc
    import socket

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification
    from trailerlink_dicomnet.dul import BoundedDUL
    from trailerlink_testing.waiting import wait_until

    server = scp_app.scp._server
    ae = AE(ae_title="MGTRAILER1")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", scp_app.scp.port, ae_title="TRAILERLINK_MWL")
    assert association.is_established
    try:
        served = wait_until(lambda: server.active_associations, 10, "the SCP's association")
        dul = served[0].dul
        assert isinstance(dul, BoundedDUL)
        assert isinstance(served[0].dimse, fastfind.FastFindDIMSE)
        sock = dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert dul._wake is not None
        pipe_closer = dul._pipe_closer
        assert association.send_c_echo().Status == 0x0000  # requests are still served
    finally:
        association.release()
    del served, dul
    wait_until(lambda: not server.active_associations, 10, "the association ended")
    wait_until(lambda: gc.collect() >= 0 and not pipe_closer.alive, 10, "the wake-up pipe closed")
