"""Optional DICOM TLS: with a certificate configured, the DICOM port speaks TLS only."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pynetdicom import AE
from pynetdicom.sop_class import Verification

pytestmark = pytest.mark.kafka


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _echo(port: int, tls: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title="MG1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    kwargs = {"tls_args": (tls, "localhost")} if tls is not None else {}
    assoc = ae.associate("127.0.0.1", port, ae_title="TRAILERLINK", **kwargs)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def test_tls_listener_answers_tls_and_only_tls(gateway_factory, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    gateway = gateway_factory(peers="MG1", dicom_tls_cert_file=cert, dicom_tls_key_file=key)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assert _echo(gateway.dicom_port, client)
    assert not _echo(gateway.dicom_port, None)
