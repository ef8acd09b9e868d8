"""The monitor's settings (``TRAILERLINK_*`` environment variables), built once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from trailerlink_common.config import ServiceSettings


class MonitorSettings(ServiceSettings):
    service_name: str = "monitor"
    http_port: int = Field(9106, ge=1, le=65535)
    mode: Literal["agent", "fleet"] = Field(
        "agent", description="agent: on a trailer (heartbeats); fleet: in the data centre"
    )

    admin_token_file: Path | None = Field(
        None,
        description="File holding the admin API's bearer token (trailerlinkctl); "
        "unset = the admin API (/v1/admin/...) is off",
    )

    # --- agent (trailer) ------------------------------------------------------------
    heartbeat_interval_seconds: float = Field(
        30.0, gt=0, description="How often the agent publishes a heartbeat"
    )
    spool_dir: Path = Field(
        Path("/var/lib/trailerlink-spool"),
        description="The trailer spool (read-only): its filesystem's free space is reported",
    )
    scrape_urls: str = Field(
        "",
        description="Comma-separated component=URL of the trailer services' /metrics, e.g. "
        "'uplink=http://uplink:9103/metrics'; backlog, link, worklist age and versions come "
        "from there",
    )
    relay_url: str = Field(
        "",
        description="Where queued heartbeats, MPPS events and gateway receipts go over "
        "HTTPS (e.g. https://ingest.example/v1/events); '' = do not relay",
    )
    client_cert_file: Path = Field(
        Path("/etc/trailerlink/client-tls/tls.crt"), description="This trailer's client certificate"
    )
    client_key_file: Path = Field(
        Path("/etc/trailerlink/client-tls/tls.key"), description="Its private key"
    )
    ca_file: Path = Field(
        Path("/etc/trailerlink/ca/ca.crt"),
        description="CA that signs the data centre's certificate",
    )
    relay_group: str = Field("monitor-relay", description="Kafka group of the agent's relay")
    relay_retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest wait between relay attempts while the link is down"
    )

    # --- agent: synthetic canary ------------------------------------------------------
    canary_gateway_host: str = Field(
        "", description="The trailer gateway's DICOM host the canary C-STOREs to; '' = no canary"
    )
    canary_gateway_port: int = Field(11112, ge=1, le=65535, description="Its DICOM port")
    canary_gateway_ae_title: str = Field(
        "TRAILERLINK", min_length=1, max_length=16, description="The gateway's AE title"
    )
    canary_calling_ae_title: str = Field(
        "TLCANARY",
        min_length=1,
        max_length=16,
        description="Calling AE title of the canary; the gateway's DICOM_ALLOWED_PEERS "
        "must list it",
    )
    canary_interval_seconds: float = Field(
        900.0, gt=0, description="Time between the end of one canary and the next"
    )
    canary_timeout_seconds: float = Field(
        600.0, gt=0, description="Deadline from the C-STORE to the canary's ObjectDelivered"
    )
    canary_group: str = Field(
        "monitor-canary", description="Kafka group reading object-delivered/failed for the canary"
    )

    # --- fleet (data centre) --------------------------------------------------------
    fleet_file: Path = Field(
        Path("/etc/trailerlink/fleet/trailers.yaml"),
        description="The trailers expected to report (a missing file: none expected)",
    )
    database_dsn_file: Path = Field(
        Path("/etc/trailerlink/database/dsn"),
        description="File holding a postgresql:// DSN for fleet state; a missing or empty "
        "file: SQLite at <data_dir>/monitor/fleet.sqlite",
    )
    consumer_group: str = Field("monitor", description="Kafka consumer group of fleet mode")
    completeness_deadline_seconds: float = Field(
        4 * 3600.0,
        gt=0,
        description="An image listed in an MPPS COMPLETED must be in PACS within this time",
    )
    evaluate_interval_seconds: float = Field(
        15.0, gt=0, description="How often per-trailer gauges and completeness are recomputed"
    )
    audit_retention_days: float = Field(
        60.0, gt=0, description="Journey and completeness rows older than this are purged"
    )
    relay_trailer_header: str = Field(
        "",
        description="Header the TLS-terminating ingress sets to the verified trailer id; "
        "when set, POST /v1/events refuses events whose trailer id differs",
    )

    def state_path(self) -> Path:
        return self.data_dir / "monitor" / "fleet.sqlite"

    def database_dsn(self) -> str:
        """The fleet state's PostgreSQL DSN from ``database_dsn_file``; '' = SQLite."""
        try:
            return self.database_dsn_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def scrape_targets(self) -> dict[str, str]:
        """``scrape_urls`` as component -> URL."""
        targets: dict[str, str] = {}
        for item in self.scrape_urls.split(","):
            if "=" in item:
                name, url = item.split("=", 1)
                targets[name.strip()] = url.strip()
        return targets
