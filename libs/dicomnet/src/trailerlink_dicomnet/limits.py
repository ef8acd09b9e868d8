"""The limits a DICOM listener enforces on what peers send, before reading it."""

from __future__ import annotations

from dataclasses import dataclass

# PS3.8 9.3: PDU types and the fixed lengths of the short ones.
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x05, 0x06, 0x07
_FIXED_LENGTH = {A_ASSOCIATE_RJ: 4, A_RELEASE_RQ: 4, A_RELEASE_RP: 4, A_ABORT: 4}
# The fixed part of an A-ASSOCIATE-RQ/AC's variable field (PS3.8 9.3.2): anything
# shorter cannot be one.
_ASSOCIATE_MIN = 68

# Reasons a connection is refused by the receive path (metric label values).
PDU_TOO_LONG = "pdu_too_long"
PDU_BAD_LENGTH = "pdu_bad_length"
PDU_UNKNOWN_TYPE = "pdu_unknown_type"
PDU_MALFORMED = "pdu_malformed"
PDU_DEADLINE = "pdu_deadline"
PDU_UNEXPECTED = "pdu_unexpected"
TOO_MANY_FROM_PEER = "too_many_connections_from_peer"
TOO_MANY_CONNECTIONS = "too_many_connections"
TOO_MANY_ASSOCIATIONS = "too_many_associations"
TLS_HANDSHAKE = "tls_handshake_failed"


@dataclass(frozen=True)
class ReceiveLimits:
    """What a listener accepts from one connection.

    ``max_pdu_bytes`` is the Maximum Length Received we advertise: PS3.8 D.1 bounds the
    variable field of every P-DATA-TF PDU the peer sends by it, so a longer one is a
    protocol violation and is never read. Before the association is accepted (the peer
    is not identified yet) every PDU is bounded by ``max_associate_bytes``.

    ``max_associations`` counts accepted-for-negotiation associations only (a peer that
    sent a whole A-ASSOCIATE-RQ); connections that have not, are bounded by the
    connection limits and the PDU deadline instead, so they never take the modality's
    association slots.
    """

    max_pdu_bytes: int = 262144
    max_associate_bytes: int = 65536
    pdu_deadline_seconds: float = 20.0
    max_associations: int = 8
    max_connections: int = 32
    max_connections_per_peer: int = 4
    tls_handshake_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 4096 <= self.max_pdu_bytes <= 16 * 1024 * 1024:
            raise ValueError(
                "max_pdu_bytes must be between 4 KiB and 16 MiB (never 0: "
                "an unlimited PDU lets any peer claim any memory)"
            )
        if self.max_associate_bytes < _ASSOCIATE_MIN:
            raise ValueError("max_associate_bytes is below the size of any A-ASSOCIATE")

    def buffer_bytes(self) -> int:
        """The largest PDU body this listener ever reads (its receive buffer's size)."""
        return max(self.max_pdu_bytes, self.max_associate_bytes)

    def header_problem(self, pdu_type: int, length: int, established: bool) -> str | None:
        """Why a PDU with this header is refused unread, or ``None`` to read it.

        ``established``: the association was accepted, so the peer is identified and
        P-DATA may be as long as we advertised; before that nothing may be longer than
        an A-ASSOCIATE-RQ may be.
        """
        if pdu_type not in (
            A_ASSOCIATE_RQ,
            A_ASSOCIATE_AC,
            A_ASSOCIATE_RJ,
            P_DATA_TF,
            A_RELEASE_RQ,
            A_RELEASE_RP,
            A_ABORT,
        ):
            return PDU_UNKNOWN_TYPE
        fixed = _FIXED_LENGTH.get(pdu_type)
        if fixed is not None:
            return None if length == fixed else PDU_BAD_LENGTH
        if pdu_type in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
            if length < _ASSOCIATE_MIN:
                return PDU_BAD_LENGTH
            return None if length <= self.max_associate_bytes else PDU_TOO_LONG
        # P-DATA-TF: at least one PDV item (length, context id, control header).
        if length < 6:
            return PDU_BAD_LENGTH
        limit = self.max_pdu_bytes if established else self.max_associate_bytes
        return None if length <= limit else PDU_TOO_LONG
