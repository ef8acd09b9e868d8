"""Sending C-FIND responses without rebuilding a command set per response.

pynetdicom turns every C-FIND-RSP primitive into a pydicom ``Dataset`` command set,
encodes it twice (once to learn the group length) and sends the command and the
identifier as two P-DATA-TF PDUs. For a modality's worklist refresh (120 pending
responses) that was most of our time per query. A pending or final C-FIND-RSP command
set only varies in the SOP class, the message id, the status and whether an identifier
follows, so its bytes are built by hand once and kept; the command and the identifier
then travel as two PDVs of one P-DATA-TF when they fit the peer's maximum PDU (PS3.8
9.3.5 allows several PDVs per PDU; a message's fragments stay in order).

Answers leave as they are made, so the modality parses the first ones while the rest
are built. (Holding them with ``TCP_CORK`` until the final response was measured
slower, as the modality then parses nothing until the SCP has finished: figures in
docs/adr/0009-choices-settled-by-measurement.md.)

The DIMSE provider that does it, :class:`FastFindDIMSE`, is given to each association
of the worklist's listener (``trailerlink_dicomnet.start_bounded_server``'s
``dimse_factory``): nothing process-wide. It takes only responses without an Error
Comment or Offending Element and with no ``EVT_DIMSE_SENT`` handler bound (those need
pynetdicom's message object); everything else is sent by pynetdicom as before. A test
compares our bytes with pynetdicom's for each status.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.pdu_primitives import P_DATA

_C_FIND_RSP = 0x8020
_HAS_DATASET, _NO_DATASET = 0x0001, 0x0101
# Command set bytes are Implicit VR Little Endian (PS3.7 6.3.1).
_ITEM_OVERHEAD = 5  # a PDV item's length (4) and context id (1), before its value
_PDV_OVERHEAD = 6  # ... and the message control header byte that starts the value


def _element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, elem, len(value)) + value


@lru_cache(maxsize=4096)
def command_set(sop_class_uid: str, message_id: int, status: int, has_dataset: bool) -> bytes:
    """The encoded C-FIND-RSP command set (group 0000, group length first)."""
    uid = sop_class_uid.encode("ascii")
    if len(uid) % 2:
        uid += b"\x00"  # UI pads with NUL
    body = b"".join(
        (
            _element(0x0000, 0x0002, uid),
            _element(0x0000, 0x0100, struct.pack("<H", _C_FIND_RSP)),
            _element(0x0000, 0x0120, struct.pack("<H", message_id)),
            _element(
                0x0000, 0x0800, struct.pack("<H", _HAS_DATASET if has_dataset else _NO_DATASET)
            ),
            _element(0x0000, 0x0900, struct.pack("<H", status)),
        )
    )
    return _element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def _fragments(data: bytes, last_header: int, max_pdu: int) -> list[bytes]:
    """``data`` as PDV values (header byte + fragment) that each fit ``max_pdu``."""
    if max_pdu == 0 or len(data) + _PDV_OVERHEAD <= max_pdu:
        return [bytes((last_header,)) + data]
    size = max_pdu - _PDV_OVERHEAD
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    more = last_header & 0x01  # 0x01 command / 0x00 data set, not last
    return [bytes((more,)) + c for c in chunks[:-1]] + [bytes((last_header,)) + chunks[-1]]


def pdata_for(primitive: C_FIND, context_id: int, max_pdu: int) -> list[P_DATA]:
    """The P-DATA primitives of a C-FIND-RSP."""
    identifier = primitive.Identifier.getvalue() if primitive.Identifier is not None else b""
    message_id, status = primitive.MessageIDBeingRespondedTo, primitive.Status
    # pynetdicom sets both on every C-FIND-RSP it builds.
    assert message_id is not None and status is not None
    command = command_set(
        str(primitive.AffectedSOPClassUID),
        int(message_id),
        int(status),
        bool(identifier),
    )
    pdvs = _fragments(command, 0x03, max_pdu)
    if identifier:
        pdvs += _fragments(identifier, 0x02, max_pdu)
    out: list[P_DATA] = []
    for pdv in pdvs:
        used = (
            sum(len(v) + _ITEM_OVERHEAD for _c, v in out[-1].presentation_data_value_list)
            if out
            else 0
        )
        if out and (max_pdu == 0 or used + len(pdv) + _ITEM_OVERHEAD <= max_pdu):
            out[-1].presentation_data_value_list.append((context_id, pdv))
            continue
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, pdv))
        out.append(pdata)
    return out


def _eligible(provider: DIMSEServiceProvider, primitive: Any) -> bool:
    assoc = provider.assoc
    return (
        type(primitive) is C_FIND
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status is not None
        and primitive.AffectedSOPClassUID is not None
        and primitive.ErrorComment is None
        and primitive.OffendingElement is None
        and not assoc.get_handlers(evt.EVT_DIMSE_SENT)
    )


class FastFindDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending eligible C-FIND responses through
    :func:`pdata_for`."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if not _eligible(self, primitive):
            super().send_msg(primitive, context_id)
            return
        for pdata in pdata_for(primitive, context_id, self.maximum_pdu_size):
            self.dul.send_pdu(pdata)
