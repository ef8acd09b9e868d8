"""A development CA and certificates for tests and the demo (never for production:
the data centre's PKI issues real trailer certificates).

    trailerlink-ingest dev-ca DIR --trailer trailer-01 --trailer trailer-02 \
        --server-name localhost --server-ip 127.0.0.1

writes ``DIR/ca.crt``, ``DIR/ca.key``, ``DIR/server.crt``/``.key`` and one
``DIR/<trailer>.crt``/``.key`` per trailer (CN and DNS SAN = the trailer id), plus an
``access.json`` allow-listing them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from trailerlink_common.durable import write_durably


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, cert_path: Path, key_path: Path) -> None:
        write_durably(cert_path, self.cert_pem(), mode=0o644)
        write_durably(key_path, self.key_pem(), mode=0o600)

    @property
    def serial_hex(self) -> str:
        return format(self.cert.serial_number, "x")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(name: str = "trailerlink dev CA", days: int = 3650) -> Issued:
    """A self-signed CA (P-256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued,
    common_name: str,
    *,
    server: bool = False,
    dns_names: list[str] | None = None,
    ip_addresses: list[str] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = 825,
) -> Issued:
    """A leaf certificate signed by ``ca``: a client (trailer) or a server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (dns_names or [common_name])]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in (ip_addresses or [])]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def write_dev_pki(
    directory: Path, trailers: list[str], server_names: list[str], server_ips: list[str]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca()
    ca.write(directory / "ca.crt", directory / "ca.key")
    server = issue(
        ca,
        server_names[0] if server_names else "localhost",
        server=True,
        dns_names=server_names or ["localhost"],
        ip_addresses=server_ips,
    )
    server.write(directory / "server.crt", directory / "server.key")
    for trailer in trailers:
        issue(ca, trailer).write(directory / f"{trailer}.crt", directory / f"{trailer}.key")
    write_durably(
        directory / "access.json",
        json.dumps({"allow": trailers, "revoked": [], "revoked_serials": []}, indent=2).encode(),
        mode=0o644,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trailerlink-ingest dev-ca", description="Issue a development CA and certificates"
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--trailer", action="append", default=[], help="trailer id (repeat)")
    parser.add_argument("--server-name", action="append", default=[])
    parser.add_argument("--server-ip", action="append", default=[])
    args = parser.parse_args(argv)
    write_dev_pki(
        args.directory,
        args.trailer,
        args.server_name or ["localhost"],
        args.server_ip or ["127.0.0.1"],
    )
    print(f"development CA and certificates written to {args.directory}")
    return 0
