"""Who is calling: the trailer id from its client certificate, checked against a list
that reloads without a restart.

The access list is a JSON file (a Kubernetes ConfigMap in the data centre)::

    {"allow": ["trailer-01", "trailer-02"],
     "revoked_serials": ["5f3a..."],          # certificate serial numbers, hex
     "revoked": ["trailer-09"]}                # whole trailers

A trailer is admitted when its certificate chains to the trailer CA, is within its
validity dates, names an allowed trailer (CN, else the first DNS SAN), and neither the
trailer nor the serial is revoked. Every refusal is audited (log line + counter).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import logging
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from trailerlink_ingest.metrics import AUTH_REFUSALS
from trailerlink_ingest.uploads import valid_trailer_id

log = logging.getLogger(__name__)
audit = logging.getLogger("trailerlink_ingest.audit")


class Refused(Exception):
    """The caller is not admitted; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass(frozen=True)
class AccessList:
    allow: frozenset[str] = frozenset()
    revoked: frozenset[str] = frozenset()
    revoked_serials: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: bytes) -> AccessList:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("access list is not a JSON object")
        unknown = set(data) - {"allow", "revoked", "revoked_serials"}
        if unknown:
            raise ValueError(f"access list has unknown keys {sorted(unknown)}")

        def strings(key: str) -> frozenset[str]:
            values = data.get(key, [])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"access list {key} is not a list of strings")
            return frozenset(values)

        serials = frozenset(s.lower().lstrip("0") or "0" for s in strings("revoked_serials"))
        return cls(strings("allow"), strings("revoked"), serials)


@dataclass
class AccessListFile:
    """The access list from ``path``, re-read when the file changes.

    An unreadable or invalid new version is logged and the previous list kept; a list
    that never loaded admits nobody.
    """

    path: Path
    reload_seconds: float = 2.0
    _current: AccessList = field(default_factory=AccessList)
    _stamp: tuple[int, int, int] | None = None
    _checked: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> AccessList:
        now = time.monotonic()
        if now - self._checked >= self.reload_seconds:
            self.reload()
        return self._current

    def reload(self) -> bool:
        """Re-read the file if it changed; True when a new list was taken."""
        with self._lock:
            self._checked = time.monotonic()
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                if self._stamp is not None:
                    log.error("access list file vanished; keeping the last list")
                return False
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return False
            try:
                new = AccessList.parse(self.path.read_bytes())
            except (OSError, ValueError) as exc:
                log.error("access list not loaded; keeping the last one", extra={"error": str(exc)})
                self._stamp = stamp
                return False
            self._current, self._stamp = new, stamp
            log.info(
                "access list loaded",
                extra={
                    "allowed": len(new.allow),
                    "revoked": len(new.revoked),
                    "revoked_serials": len(new.revoked_serials),
                },
            )
            return True


def trailer_id_of(cert: x509.Certificate) -> str:
    """The trailer id a certificate names: its CN, else its first DNS SAN."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        value = names[0].value
        return value if isinstance(value, str) else value.decode()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ""
    dns = san.value.get_values_for_type(x509.DNSName)
    return dns[0] if dns else ""


def parse_client_cert_header(value: str) -> bytes:
    """DER bytes of the certificate a TLS-terminating proxy passes on.

    Two encodings are in use: RFC 9440 ``Client-Cert: :<base64 DER>:`` (Envoy, HAProxy,
    Traefik with a plugin) and ingress-nginx's ``ssl-client-cert``, the PEM URL-encoded.
    """
    value = value.strip()
    if value.startswith("-----") or value.startswith("%2D"):
        return _der_of_url_encoded_pem(value)
    if len(value) < 3 or value[0] != ":" or value[-1] != ":":
        raise Refused("bad_client_cert_header", "Client-Cert is not a byte sequence")
    try:
        return base64.b64decode(value[1:-1], validate=True)
    except (binascii.Error, ValueError):
        raise Refused("bad_client_cert_header", "Client-Cert is not base64") from None


def _der_of_url_encoded_pem(value: str) -> bytes:
    pem = urllib.parse.unquote(value).encode("ascii", "replace")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise Refused(
            "bad_client_cert_header", "client certificate header is not a PEM certificate"
        ) from None
    if len(certs) != 1:  # a chain would make "which one is the trailer" ambiguous
        raise Refused(
            "bad_client_cert_header",
            f"client certificate header holds {len(certs)} certificates, expected 1",
        )
    return certs[0].public_bytes(serialization.Encoding.DER)


def parse_networks(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    ]


class Authenticator:
    """Turns a verified peer certificate into an admitted trailer id, or refuses."""

    def __init__(self, access: AccessListFile, ca_file: Path) -> None:
        self.access = access
        self.cas = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())

    def admit(self, der: bytes | None, peer: str = "") -> str:
        """The trailer id, or :class:`Refused` (audited)."""
        try:
            return self._admit(der)
        except Refused as refused:
            AUTH_REFUSALS.labels(refused.reason).inc()
            audit.warning(
                "trailer refused",
                extra={"reason": refused.reason, "detail": str(refused), "peer": peer},
            )
            raise

    def _admit(self, der: bytes | None) -> str:
        if not der:
            raise Refused("no_certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            raise Refused("bad_certificate") from None
        if not any(self._issued_by(cert, ca) for ca in self.cas):
            raise Refused("unknown_issuer")
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise Refused("expired", "certificate outside its validity period")
        trailer = trailer_id_of(cert)
        if not valid_trailer_id(trailer):
            raise Refused("bad_name", "certificate names no valid trailer id")
        listed = self.access.current()
        serial = format(cert.serial_number, "x")
        if trailer in listed.revoked or serial in listed.revoked_serials:
            raise Refused("revoked", f"{trailer} serial {serial} is revoked")
        if trailer not in listed.allow:
            raise Refused("not_allowed", f"{trailer} is not on the allow-list")
        return trailer

    @staticmethod
    def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
            return False
        return True
