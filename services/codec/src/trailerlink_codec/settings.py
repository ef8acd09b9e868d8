"""The codec's settings (environment variables ``TRAILERLINK_*``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from trailerlink_common.config import ServiceSettings


class CodecSettings(ServiceSettings):
    """Everything the codec reads from the environment, once, at start-up."""

    service_name: str = "codec"
    http_port: int = Field(9102, ge=1, le=65535, description="HTTP port: /healthz /readyz /metrics")

    # --- input: the gateway's encrypted spool ---------------------------------------
    spool_dir: Path | None = Field(
        None, description="Spool root the gateway writes; default <data_dir>/spool"
    )
    spool_key_file: Path = Field(
        Path("/etc/trailerlink/spool-key/key"),
        description="At-rest spool key (32 raw bytes or base64), the gateway's current key",
    )
    spool_old_key_files: str = Field(
        "", description="Comma-separated older spool key files still needed to read objects"
    )

    # --- output: sealed objects for the uplink --------------------------------------
    outgoing_dir: Path | None = Field(
        None,
        description="Root of the sealed objects (the uplink reads it); default <data_dir>/outgoing",
    )
    sealing_public_keys: Path = Field(
        Path("/etc/trailerlink/sealing-keys"),
        description="Data-centre X25519 public keys (PEM): one file or a directory of *.pem. "
        "Never a private key: the codec refuses to start with one",
    )
    sealing_current_key_id: str = Field(
        "", description="Key id (dc-…) to seal new objects for; may be empty with one key"
    )

    # --- work -----------------------------------------------------------------------
    workers: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="Objects sealed at once (threads; the codecs release the GIL)",
    )
    pixel_codec: Literal["jpegls", "htj2k"] = Field(
        "jpegls",
        description="Image codec for native pixel data: jpegls (best ratio) or "
        "htj2k (about twice as fast, ~3% larger)",
    )
    zstd_level: int = Field(6, ge=1, le=22, description="zstd level for large non-pixel data")
    chunk_size_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        le=64 * 1024 * 1024,
        description="Plaintext bytes per AES-256-GCM chunk",
    )
    consumer_group: str = Field("codec", description="Kafka consumer group")

    def resolved_spool_dir(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    def resolved_outgoing_dir(self) -> Path:
        return self.outgoing_dir or self.data_dir / "outgoing"

    def old_spool_key_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in self.spool_old_key_files.split(",") if p.strip()]
