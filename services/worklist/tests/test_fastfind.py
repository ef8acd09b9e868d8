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
    return [value for pdata in message.encode_msg(1, max_pdu)
            for _cx, value in pdata.presentation_data_value_list]


@pytest.mark.parametrize("status,identifier", [
    (0xFF00, b"\x08\x00\x50\x00\x08\x00\x00\x00ACC00001" * 40),  # pending, an answer
    (0xFF01, b"\x10\x00\x10\x00\x0a\x00\x00\x00TEST^ALPHA"),
    (0x0000, None),  # success
    (0xFE00, None),  # cancel
])
@pytest.mark.parametrize("max_pdu", [0, 64, 131072])
@pytest.mark.parametrize("message_id", [1, 7, 65535])
def test_same_bytes_as_pynetdicom(status: int, identifier: bytes | None, max_pdu: int,
                                  message_id: int) -> None:
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


def test_cork_holds_and_releases_a_real_tcp_connection() -> None:
    import socket
    from types import SimpleNamespace

    if not hasattr(socket, "TCP_CORK"):
        pytest.skip("TCP_CORK is Linux only")
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        assoc = SimpleNamespace(dul=SimpleNamespace(socket=SimpleNamespace(socket=peer)))
        fastfind._cork(assoc, True)  # pending answers queued
        assert peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 1
        fastfind._cork(assoc, False)  # the final response
        assert peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        peer.close()
        fastfind._cork(assoc, True)  # a closed connection: nothing to do, no error
    finally:
        for s in (client, peer, server):
            s.close()
