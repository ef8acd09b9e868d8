"""The gateway's settings: one typed object built from ``TRAILERLINK_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from trailerlink_common.config import ServiceSettings
from trailerlink_dicomnet.settings import DicomListenerSettings

GIB = 1024**3


class GatewaySettings(ServiceSettings, DicomListenerSettings):
    """Everything the gateway is configured with (see services/gateway/README.md)."""

    service_name: str = "gateway"
    http_port: int = Field(9101, ge=1, le=65535, description="HTTP port: /healthz /readyz /metrics")

    # --- DICOM listener ----------------------------------------------------------
    dicom_ae_title: str = Field(
        "TRAILERLINK", min_length=1, max_length=16, description="The gateway's AE title"
    )
    dicom_host: str = Field("0.0.0.0", description="Address the DICOM port listens on")  # noqa: S104
    dicom_port: int = Field(11112, ge=1, le=65535, description="DICOM port")
    dicom_allowed_peers: str = Field(
        "",
        description="Comma-separated calling AE titles allowed to associate, each optionally "
        "with a source network: 'MG1@10.20.0.0/24,MG2@10.20.0.7'. '*' allows any "
        "AE title (development only). Empty: nobody may associate.",
    )
    dicom_require_called_ae_title: bool = Field(
        True, description="Reject associations whose called AE title is not ours"
    )
    dicom_network_timeout_seconds: float = Field(
        60.0, gt=0, description="Idle network timeout of an association"
    )
    dicom_tls_cert_file: Path | None = Field(
        None, description="PEM certificate: enables DICOM TLS on the DICOM port when set"
    )
    dicom_tls_key_file: Path | None = Field(None, description="PEM private key for TLS")
    dicom_tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle: when set, peers must present a certificate it signed"
    )

    # --- spool -------------------------------------------------------------------
    spool_dir: Path | None = Field(
        None, description="Spool root (encrypted objects and index); default <data_dir>/spool"
    )
    spool_key_file: Path = Field(
        Path("/etc/trailerlink/spool-key/key"),
        description="At-rest spool key: 32 raw bytes or base64 (a Kubernetes Secret)",
    )
    spool_min_free_bytes: int = Field(
        5 * GIB,
        ge=0,
        description="Free-space watermark of the spool filesystem: below it new stores are "
        "refused with Out of Resources (0xA700)",
    )
    publish_wait_seconds: float = Field(
        0.0,
        ge=0,
        description="How long a store may wait for its ObjectReceived to reach Kafka before "
        "answering. 0: answer once the object is durable and its event is in the "
        "durable outbox; the publisher sends it meanwhile (the sender's next "
        "object overlaps the publication). Success either way once durable.",
    )

    # --- storage commitment ------------------------------------------------------
    commitment_peers: str = Field(
        "",
        description="Where N-EVENT-REPORTs go on a new association, per calling AE title: "
        "'MG1=10.20.0.5:104,MG2=mg2.local:11112'",
    )
    commitment_reply: Literal["same-or-new", "new"] = Field(
        "same-or-new",
        description="'same-or-new': answer on the requesting association while it is open, "
        "else on a new one; 'new': always a new association",
    )
    commitment_deadline_seconds: float = Field(
        86400.0,
        gt=0,
        description="After this long, instances not yet confirmed in PACS are reported as "
        "failed (for now) so the modality keeps its copies",
    )
    commitment_retry_seconds: float = Field(
        30.0, gt=0, description="Wait before retrying an N-EVENT-REPORT the modality refused"
    )
    commitment_retention_days: float = Field(
        30.0, gt=0, description="How long answered commitments and delivery outcomes are kept"
    )

    def resolved_spool_dir(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    def state_dir(self) -> Path:
        """Where the gateway keeps its own state (the commitment database)."""
        return self.data_dir / "gateway"
