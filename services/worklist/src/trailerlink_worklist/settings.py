"""The worklist service's settings: one typed object, read from the environment once."""

from __future__ import annotations

import codecs
import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from trailerlink_common.config import ServiceSettings
from trailerlink_dicomnet.settings import DicomListenerSettings

from trailerlink_worklist import charsets, hl7msg, tls


class WorklistSettings(ServiceSettings, DicomListenerSettings):
    """``TRAILERLINK_*`` variables of ``trailerlink-worklist`` (see the folder's README)."""

    service_name: str = "worklist"
    http_port: int = Field(9105, ge=1, le=65535, description="Staff page, /metrics, /healthz")

    # --- the modality side -------------------------------------------------------
    dicom_ae_title: str = Field("TRAILERLINK_MWL", max_length=16, description="Our AE title")
    dicom_host: str = Field("0.0.0.0", description="Address of the DICOM port")  # noqa: S104
    dicom_port: int = Field(11113, ge=1, le=65535, description="MWL C-FIND and MPPS port")
    dicom_max_associations: int = Field(10, ge=1, description="Concurrent modality associations")
    dicom_max_pdu_bytes: int = Field(
        131072,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Largest P-DATA PDU we advertise and receive (a longer one is never read)",
    )
    dicom_network_timeout_seconds: float = Field(60.0, gt=0)
    dicom_default_character_set: str = Field(
        "ISO_IR 100",
        description="Answer character set for a calling AE not listed in "
        "dicom_ae_character_sets whose query names none (values it cannot hold are "
        "transliterated)",
    )
    dicom_ae_character_sets: str = Field(
        "",
        description="Per calling AE, the character set its answers are in: "
        "'AE1=ISO_IR 100,AE2=ISO_IR 192' (overrides what its query names)",
    )
    dicom_uppercase_names_aes: str = Field(
        "",
        description="Comma-separated calling AEs that want person names in upper "
        "case (everyone else gets the case the source gave)",
    )
    dicom_tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) of the DICOM port: set it and the key "
        "file and the port speaks TLS only",
    )
    dicom_tls_key_file: Path | None = Field(None, description="PEM private key of it")
    dicom_tls_client_ca_file: Path | None = Field(
        None, description="CA(s) whose certificates modalities must present"
    )
    dicom_tls_require_client_cert: bool = Field(
        True, description="With a client CA: refuse a modality without a certificate"
    )
    pn_case_sensitive: bool = Field(
        False, description="Match person names case-sensitively (PS3.4 allows either)"
    )
    combined_datetime_matching: bool = Field(
        True,
        description="Match SPS Start Date and Time given together as one date-time range "
        "(PS3.4 C.2.2.2.5.1, as dcmtk does) rather than each on its own",
    )

    # --- this trailer's slice of the worklist (data minimisation) ------------------
    site_code: str = Field(
        "", description="This trailer's Scheduled Procedure Step Location; '' accepts any"
    )
    station_ae_titles: str = Field(
        "", description="Comma-separated modality AE titles of this trailer; '' accepts any"
    )
    modality: str = Field("MG", description="Modality this trailer schedules")
    horizon_days: int = Field(14, ge=0, description="Days ahead kept in the cache")
    timezone: str = Field("Europe/London", description="Local time zone that defines 'today'")
    cache_path: Path | None = Field(
        None,
        description="SQLite cache; default <data_dir>/worklist/worklist.sqlite. Must be on "
        "the encrypted volume: it holds patient demographics",
    )
    worklist_key_file: Path = Field(
        Path("/etc/trailerlink/worklist-key/key"),
        description="At-rest key of the cache's patient fields: 32 raw bytes or base64 "
        "(a Kubernetes Secret, not the spool's)",
    )

    # --- upstream (NBSS via the Trust's worklist broker or HL7 feed) ----------------
    upstream: Literal["dicom_mwl", "hl7", "none"] = Field(
        "dicom_mwl", description="Where bookings come from"
    )
    upstream_mwl_host: str = Field("127.0.0.1", description="Trust worklist broker host")
    upstream_mwl_port: int = Field(104, ge=1, le=65535)
    upstream_mwl_ae_title: str = Field("NBSS_MWL", max_length=16)
    upstream_poll_seconds: float = Field(
        15.0,
        gt=0,
        description="MWL poll interval: how soon an upstream cancellation "
        "leaves the modality's list",
    )
    upstream_timeout_seconds: float = Field(15.0, gt=0, description="Upstream call deadline")
    upstream_mwl_undeclared_charset: str = Field(
        "auto",
        description="How the broker's answers that carry non-ASCII text but no "
        "Specific Character Set are decoded: 'auto' (UTF-8 if valid UTF-8, else ISO_IR "
        "100) or a DICOM term such as 'ISO_IR 100', 'ISO_IR 192', 'ISO_IR 126'",
    )
    hl7_listen_host: str = Field("0.0.0.0", description="HL7 MLLP listener address")  # noqa: S104
    hl7_listen_port: int = Field(2575, ge=1, le=65535, description="HL7 MLLP listener port")
    hl7_tls_cert_file: Path | None = Field(
        None, description="PEM certificate of the HL7 listener: with the key, MLLP over TLS"
    )
    hl7_tls_key_file: Path | None = Field(None, description="PEM private key of it")
    hl7_tls_client_ca_file: Path | None = Field(
        None, description="CA whose certificates HL7 senders must present"
    )
    hl7_encoding: str = Field(
        "auto",
        description="HL7 text encoding when MSH-18 names none: 'auto' (UTF-8 if "
        "the bytes are valid UTF-8, else ISO 8859-1), a table 0211 name or a Python codec",
    )
    hl7_application: str = Field("TRAILERLINK", description="Our HL7 application (MSH-3)")

    # --- back upstream -----------------------------------------------------------
    status_route: Literal["dicom_mpps", "hl7", "none"] = Field(
        "none", description="How procedure step status goes upstream"
    )
    upstream_mpps_host: str = Field("127.0.0.1", description="Trust MPPS SCP host")
    upstream_mpps_port: int = Field(104, ge=1, le=65535)
    upstream_mpps_ae_title: str = Field("NBSS_MPPS", max_length=16)
    corrections_route: Literal["hl7", "none"] = Field(
        "none", description="How demographic corrections go upstream (HL7 ADT^A08)"
    )
    upstream_hl7_host: str = Field("127.0.0.1", description="Trust HL7 inbound (MLLP) host")
    upstream_hl7_port: int = Field(2576, ge=1, le=65535)
    upstream_hl7_tls: bool = Field(False, description="MLLP over TLS to the Trust")
    upstream_hl7_tls_ca_file: Path | None = Field(
        None, description="CA of the Trust's HL7 server (default: the system's CAs)"
    )
    upstream_hl7_tls_cert_file: Path | None = Field(
        None, description="Our client certificate for the Trust's HL7 server, if it asks"
    )
    upstream_hl7_tls_key_file: Path | None = Field(None, description="Its private key")
    upstream_hl7_facility: str = Field("NBSS", description="Receiving application (MSH-5)")

    # --- admin API (trailerlinkctl worklist show) ---------------------------------
    admin_token_file: Path | None = Field(
        None,
        description="File holding the admin API's bearer token (trailerlinkctl); "
        "unset = the admin API (/v1/admin/worklist) is off",
    )

    # --- staff page --------------------------------------------------------------
    staff_credentials_file: Path | None = Field(
        None,
        description="File of 'user:scrypt$...' lines (make one with `trailerlink-worklist "
        "hash-password`); without it the staff page refuses everyone",
    )
    staff_csrf_secret_file: Path | None = Field(
        None, description="Key for CSRF tokens; default: a random key per process"
    )

    @model_validator(mode="after")
    def _charsets(self) -> WorklistSettings:
        charsets.check_fallback(self.upstream_mwl_undeclared_charset)
        if self.hl7_encoding.lower() != "auto" and hl7msg.msh18_codec(self.hl7_encoding) is None:
            try:
                codecs.lookup(self.hl7_encoding)
            except LookupError:
                raise ValueError(
                    f"TRAILERLINK_HL7_ENCODING: unknown encoding {self.hl7_encoding!r}"
                ) from None
        for term in (self.dicom_default_character_set, *self.ae_character_sets().values()):
            if not charsets.known_term(term):
                raise ValueError(f"unknown DICOM character set {term!r}")
        return self

    def ae_character_sets(self) -> dict[str, str]:
        """Calling AE title -> answer character set."""
        out = {}
        for pair in self.dicom_ae_character_sets.split(","):
            if not pair.strip():
                continue
            ae, sep, term = pair.partition("=")
            if not sep or not ae.strip():
                raise ValueError("TRAILERLINK_DICOM_AE_CHARACTER_SETS: use AE=TERM pairs")
            out[ae.strip()] = term.strip()
        return out

    def uppercase_names_aes(self) -> set[str]:
        return {a.strip() for a in self.dicom_uppercase_names_aes.split(",") if a.strip()}

    @model_validator(mode="after")
    def _tls_pairs(self) -> WorklistSettings:
        for prefix in ("dicom_tls", "hl7_tls", "upstream_hl7_tls"):
            cert, key = getattr(self, f"{prefix}_cert_file"), getattr(self, f"{prefix}_key_file")
            if (cert is None) != (key is None):
                raise ValueError(
                    f"TRAILERLINK_{prefix.upper()}_CERT_FILE and _KEY_FILE go together"
                )
        return self

    def dicom_tls(self) -> ssl.SSLContext | None:
        """The DICOM listener's TLS context, or None for plain TCP."""
        if self.dicom_tls_cert_file is None or self.dicom_tls_key_file is None:
            return None
        return tls.server_context(
            self.dicom_tls_cert_file,
            self.dicom_tls_key_file,
            self.dicom_tls_client_ca_file,
            self.dicom_tls_require_client_cert,
        )

    def hl7_tls(self) -> ssl.SSLContext | None:
        """The HL7 listener's TLS context, or None for plain MLLP."""
        if self.hl7_tls_cert_file is None or self.hl7_tls_key_file is None:
            return None
        return tls.server_context(
            self.hl7_tls_cert_file, self.hl7_tls_key_file, self.hl7_tls_client_ca_file
        )

    def upstream_hl7_tls_context(self) -> ssl.SSLContext | None:
        """TLS to the Trust's HL7 server, or None for plain MLLP."""
        if not self.upstream_hl7_tls:
            return None
        return tls.client_context(
            self.upstream_hl7_tls_ca_file,
            self.upstream_hl7_tls_cert_file,
            self.upstream_hl7_tls_key_file,
        )

    def resolved_cache_path(self) -> Path:
        return self.cache_path or self.data_dir / "worklist" / "worklist.sqlite"

    def station_ae_list(self) -> list[str]:
        return [a.strip() for a in self.station_ae_titles.split(",") if a.strip()]
