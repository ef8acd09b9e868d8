"""The listener limits every DICOM service configures the same way (``TRAILERLINK_*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from trailerlink_dicomnet.limits import ReceiveLimits

MIB = 1024 * 1024


class DicomListenerSettings(BaseModel):
    """Mixed into a service's settings next to its ``dicom_max_pdu_bytes`` and
    ``dicom_max_associations`` (defaults differ per service)."""

    dicom_max_pdu_bytes: int = Field(
        262144,
        ge=4096,
        le=16 * MIB,
        description="Largest P-DATA PDU we advertise and receive; a longer one is never "
        "read (A-ABORT). Big PDUs are faster; never unlimited",
    )
    dicom_max_associations: int = Field(8, ge=1, description="Concurrent associations")
    dicom_max_associate_bytes: int = Field(
        65536,
        ge=68,
        le=16 * MIB,
        description="Largest A-ASSOCIATE-RQ, and any PDU before the association is "
        "accepted: what an unidentified peer can make us buffer",
    )
    dicom_pdu_deadline_seconds: float = Field(
        20.0, gt=0, description="A PDU, once started, must arrive whole within this"
    )
    dicom_max_connections: int = Field(
        32, ge=1, description="Open DICOM connections in total; more are closed at once"
    )
    dicom_max_connections_per_peer: int = Field(
        4, ge=1, description="Open DICOM connections from one source address"
    )
    dicom_tls_handshake_seconds: float = Field(
        10.0, gt=0, description="Deadline of a DICOM TLS handshake"
    )

    def receive_limits(self) -> ReceiveLimits:
        """What the DICOM listener enforces on every connection."""
        return ReceiveLimits(
            max_pdu_bytes=self.dicom_max_pdu_bytes,
            max_associate_bytes=self.dicom_max_associate_bytes,
            pdu_deadline_seconds=self.dicom_pdu_deadline_seconds,
            max_associations=self.dicom_max_associations,
            max_connections=self.dicom_max_connections,
            max_connections_per_peer=self.dicom_max_connections_per_peer,
            tls_handshake_seconds=self.dicom_tls_handshake_seconds,
        )
