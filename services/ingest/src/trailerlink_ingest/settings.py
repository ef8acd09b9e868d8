"""The ingest's one settings object, built from ``TRAILERLINK_*`` variables at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from trailerlink_common.config import ServiceSettings


class IngestSettings(ServiceSettings):
    """Everything the ingest reads from the environment (see services/ingest/README.md)."""

    service_name: str = "ingest"
    trailer_id: str = ""
    http_port: int = Field(
        9104, ge=1, le=65535, description="Plain HTTP: /healthz /readyz /metrics"
    )
    data_dir: Path = Field(
        Path("/var/lib/trailerlink/ingest"),
        description="Per-replica scratch space (unsealed objects in flight)",
    )

    # --- tus over mutual TLS ---------------------------------------------------------
    tus_host: str = Field("0.0.0.0", description="Address of the HTTPS (tus, receipts) port")  # noqa: S104
    tus_port: int = Field(8443, ge=1, le=65535, description="HTTPS port: tus and receipts")
    tus_base_path: str = Field("/files/", description="Path of the tus creation endpoint")
    tls_cert_file: Path = Field(
        Path("/etc/trailerlink/tls/tls.crt"), description="Server certificate chain (PEM)"
    )
    tls_key_file: Path = Field(
        Path("/etc/trailerlink/tls/tls.key"), description="Server private key (PEM)"
    )
    tls_client_ca_file: Path = Field(
        Path("/etc/trailerlink/tls/trailer-ca.crt"),
        description="CA(s) that issue trailer certificates (PEM)",
    )
    identity_source: Literal["tls", "proxy-header"] = Field(
        "tls",
        description="tls: the verified peer certificate of our own TLS port; "
        "proxy-header: RFC 9440 Client-Cert from a trusted TLS-terminating proxy",
    )
    client_cert_header: str = Field(
        "client-cert",
        pattern=r"^[A-Za-z0-9-]+$",
        description="proxy-header: the header carrying the verified certificate — "
        "client-cert (RFC 9440) or ssl-client-cert (ingress-nginx, URL-encoded PEM)",
    )
    trusted_proxies: str = Field(
        "", description="Comma-separated IPs/CIDRs whose Client-Cert header is believed"
    )
    access_list_file: Path = Field(
        Path("/etc/trailerlink/access/trailers.json"),
        description="JSON allow-list and revocation list; re-read when it changes",
    )
    access_reload_seconds: float = Field(2.0, gt=0, description="How often the list is checked")
    admin_token_file: Path | None = Field(
        None,
        description="File holding the admin API's bearer token (trailerlinkctl); "
        "unset = the admin API (/v1/admin/trailers) is off",
    )
    enrol_ca_cert_file: Path | None = Field(
        None, description="CA certificate that `trailer enrol` issues trailer certificates from"
    )
    enrol_ca_key_file: Path | None = Field(None, description="Its private key (PEM)")

    # --- dead clients (a trailer's 4G link that vanished without FIN or RST) -------------
    body_idle_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="An upload body that brings no bytes this long ends (408): "
        "the durable offset stands and the upload's lock is released for the resume",
    )
    request_head_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="A request's line and headers must be complete this long after the "
        "connection is ready or its last response went; else the connection is closed "
        "(a peer dripping header bytes holds nothing)",
    )
    tcp_keepalive_seconds: int = Field(
        15,
        ge=0,
        description="Accepted HTTPS connections: keepalive probes after this idle "
        "time, then every third of it; 3 unanswered end the connection (0: off)",
    )
    tcp_user_timeout_seconds: int = Field(
        30,
        ge=0,
        description="Accepted HTTPS connections: data unacknowledged this long "
        "ends the connection (TCP_USER_TIMEOUT; 0: the kernel's ~15 min)",
    )

    # --- storage ---------------------------------------------------------------------
    storage_dir: Path = Field(
        Path("/var/lib/trailerlink/uploads"),
        description="Shared (ReadWriteMany) storage of uploads",
    )
    upload_expiry_seconds: int = Field(
        24 * 3600,
        gt=0,
        description="Unfinished uploads idle this long, and uploads whose "
        "failed receipt is this old, are removed (the trailer keeps its copy and starts again)",
    )
    conflict_dir_name: str = Field("conflicts", description="Under storage_dir: kept conflicts")

    # --- limits per trailer ----------------------------------------------------------
    max_object_bytes: int = Field(2 * 1024**3, gt=0, description="Largest Upload-Length (413)")
    max_concurrent_uploads: int = Field(
        64, gt=0, description="Unfinished uploads one trailer may hold at once (429)"
    )
    max_requests_per_second: float = Field(
        50.0, gt=0, description="Sustained request rate per trailer (429 above it)"
    )
    request_burst: int = Field(200, gt=0, description="Requests a trailer may burst")

    # --- processing ------------------------------------------------------------------
    sealing_keys_dir: Path = Field(
        Path("/etc/trailerlink/sealing-private-keys"),
        description="Data-centre private keys (PEM), one per key id, shared by the replicas; "
        "re-read when it changes. `keys rotate`/`retire` write here (must be writable)",
    )
    key_retire_settle_seconds: float = Field(
        3600.0,
        ge=0,
        description="A superseded key may be retired only on trailer reports "
        "made at least this long after the rotation (objects sealed during the switch-over "
        "reach the trailer's queue first)",
    )
    ledger_dsn: str = Field("", description="postgresql://... for PostgreSQL; empty: SQLite")
    ledger_sqlite_path: Path = Field(
        Path("/var/lib/trailerlink/uploads/ledger.sqlite3"),
        description="SQLite ledger (single-replica deployments)",
    )
    ledger_shared: bool = Field(
        False,
        description="More than one replica may run (the central chart sets it): an empty "
        "LEDGER_DSN then stops the ingest at start, as SQLite would give each replica a "
        "ledger of its own and PACS could get an object twice",
    )
    consumer_group: str = Field("ingest", description="Kafka consumer group of the processors")

    # --- PACS ------------------------------------------------------------------------
    pacs_host: str = Field("127.0.0.1", description="PACS host")
    pacs_port: int = Field(104, ge=1, le=65535, description="PACS DICOM port")
    pacs_ae_title: str = Field("PACS", description="Called AE title")
    pacs_canary_ae_title: str = Field(
        "",
        max_length=16,
        description="Called AE title for the monitor's synthetic canary "
        "(PatientID TLCANARY-...), a PACS test destination; empty: PACS_AE_TITLE",
    )
    calling_ae_title: str = Field("TRAILERLINK", description="Our AE title")
    pacs_timeout_seconds: float = Field(60.0, gt=0, description="Association/DIMSE timeout")
    pacs_max_pdu: int = Field(131072, ge=0, description="Maximum PDU size we receive")
    pacs_retry_initial_seconds: float = Field(1.0, gt=0, description="First retry wait")
    pacs_retry_max_seconds: float = Field(60.0, gt=0, description="Longest retry wait")
    pacs_allow_lossless_fallback: bool = Field(
        True,
        description="If the PACS refuses the original transfer syntax, send the same "
        "pixels in another lossless one (recorded on the receipt)",
    )
    pacs_storage_commitment: bool = Field(
        False,
        description="Ask the PACS for storage commitment (N-ACTION) and count an "
        "object delivered only on its N-EVENT-REPORT",
    )
    commitment_host: str = Field(
        "0.0.0.0",  # noqa: S104
        description="Address the PACS sends commitment reports to (our CALLING_AE_TITLE)",
    )
    commitment_port: int = Field(
        11113, ge=1, le=65535, description="DICOM port for the PACS's N-EVENT-REPORTs"
    )
    commitment_timeout_seconds: float = Field(
        300.0, gt=0, description="Ask again when a commitment has no report after this"
    )
    keep_delivered_uploads: bool = Field(
        False, description="Keep sealed uploads after delivery (default: delete them)"
    )

    @model_validator(mode="after")
    def _one_ledger_for_every_replica(self) -> IngestSettings:
        if self.ledger_shared and not self.ledger_dsn.strip():
            raise ValueError(
                "TRAILERLINK_LEDGER_DSN is empty but TRAILERLINK_LEDGER_SHARED is set: "
                "replicas must share one PostgreSQL ledger (SQLite would be one per replica)"
            )
        return self
