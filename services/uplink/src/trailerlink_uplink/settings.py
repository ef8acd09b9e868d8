"""The uplink's settings (``TRAILERLINK_*`` environment variables), built once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from trailerlink_common.config import ServiceSettings


class UplinkSettings(ServiceSettings):
    service_name: str = "uplink"
    http_port: int = Field(9103, ge=1, le=65535)

    # --- where sealed objects are and what else the janitor may clean ------------------
    outgoing_dir: Path | None = Field(
        None, description="The codec's outgoing spool (sealed objects); <data_dir>/outgoing"
    )
    spool_dir: Path | None = Field(
        None, description="The gateway's encrypted spool; default <data_dir>/spool"
    )
    queue_path: Path | None = Field(
        None, description="The durable send queue (SQLite); default <data_dir>/uplink/queue.sqlite"
    )
    consumer_group: str = Field("uplink", description="Kafka consumer group for object-sealed")
    admin_token_file: Path | None = Field(
        None,
        description="File holding the admin API's bearer token (trailerlinkctl); "
        "unset = the admin API (/v1/admin/uplink) is off",
    )

    # --- the data centre ------------------------------------------------------------
    ingest_url: str = Field(
        "https://ingest.trailerlink.example.nhs.uk",
        description="Origin of the data centre's ingest (scheme://host[:port])",
    )
    tus_path: str = Field("/files/", description="Path of the tus creation endpoint")
    receipts_url: str = Field("", description="Receipts endpoint; default <ingest_url>/v1/receipts")
    client_cert_file: Path = Field(
        Path("/etc/trailerlink/client-tls/tls.crt"), description="This trailer's client cert"
    )
    client_key_file: Path = Field(
        Path("/etc/trailerlink/client-tls/tls.key"), description="Its private key"
    )
    ca_file: Path = Field(
        Path("/etc/trailerlink/ca/ca.crt"), description="CA that signs the ingest's certificate"
    )

    # --- sealing key sync (rotation) --------------------------------------------------
    sealing_keys_sync_dir: Path | None = Field(
        None,
        description="Directory the codec reads its public keys from "
        "(its SEALING_PUBLIC_KEYS, writable, shared with the codec): the data centre's "
        "keys and a 'current' marker are written here; unset = no key sync",
    )
    keys_url: str = Field("", description="Key listing; default <ingest_url>/v1/keys")
    keys_poll_seconds: float = Field(
        300.0, gt=0, description="How often keys are fetched and unsent counts reported"
    )

    # --- sending --------------------------------------------------------------------
    chunk_size_bytes: int = Field(
        1024 * 1024,
        ge=16 * 1024,
        description="Bytes per PATCH: the most that is re-sent after a link cut",
    )
    concurrency: int = Field(2, ge=1, le=32, description="Objects uploaded at once")
    bandwidth_cap_bytes_per_second: int = Field(
        0, ge=0, description="Upload cap outside the schedule's windows; 0 = uncapped"
    )
    bandwidth_schedule: str = Field(
        "", description="Caps by local time, e.g. '08:00-18:00=250000,18:00-08:00=0' (first match)"
    )
    timezone: str = Field("Europe/London", description="Time zone of the bandwidth schedule")
    connect_timeout_seconds: float = Field(10.0, gt=0)
    io_timeout_seconds: float = Field(
        30.0, gt=0, description="A read or write that makes no progress this long is a stall"
    )
    tcp_user_timeout_seconds: int = Field(
        15,
        ge=0,
        description="A connection whose sent data stays unacknowledged this long "
        "is given up (TCP_USER_TIMEOUT): how soon a silently dead 4G link is noticed; "
        "0 = the kernel's default (~15 min)",
    )
    tcp_keepalive_seconds: int = Field(
        5,
        ge=0,
        description="An idle connection (awaiting an answer) is probed after this "
        "long, then as often; three missed probes end it (0 = no keepalive)",
    )
    backoff_initial_seconds: float = Field(0.5, gt=0)
    backoff_max_seconds: float = Field(30.0, gt=0, description="Ceiling of the retry backoff")
    probe_interval_seconds: float = Field(
        2.0, gt=0, description="How often a down link is probed (sending resumes on success)"
    )

    # --- receipts and the janitor ---------------------------------------------------
    receipts_poll_seconds: float = Field(5.0, gt=0)
    retention_days: float = Field(7.0, ge=0, description="Keep delivered objects this long")
    janitor_interval_seconds: float = Field(600.0, gt=0)
    disk_pressure_free_fraction: float = Field(
        0.10,
        ge=0,
        le=1,
        description="Below this free fraction, delivered objects go before their retention ends",
    )

    def resolved_outgoing_dir(self) -> Path:
        return self.outgoing_dir or self.data_dir / "outgoing"

    def resolved_spool_dir(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    def resolved_queue_path(self) -> Path:
        return self.queue_path or self.data_dir / "uplink" / "queue.sqlite"

    def tus_url(self) -> str:
        return self.ingest_url.rstrip("/") + "/" + self.tus_path.lstrip("/")

    def resolved_keys_url(self) -> str:
        return self.keys_url or self.ingest_url.rstrip("/") + "/v1/keys"

    def resolved_receipts_url(self) -> str:
        return self.receipts_url or self.ingest_url.rstrip("/") + "/v1/receipts"
