"""TLS 1.3 with the trailer's client certificate, and failures named by kind: an
untrusted server is ``tls``, an unresolvable name ``dns``, a closed port ``connect``."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from trailerlink_testing.ports import free_port
from trailerlink_uplink.link import LinkError
from trailerlink_uplink.tus import TusClient, make_http_client, tls_context


def _cert(
    name: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    san: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key, subject


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca, ca_key, ca_name = _cert("test ca", None, ca=True)
    server, server_key, _ = _cert("localhost", (ca_name, ca_key), san="localhost")
    client, client_key, _ = _cert("trailer-test", (ca_name, ca_key))
    other_ca, _, _ = _cert("other ca", None, ca=True)
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "other.crt").write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    _write(tmp_path / "server", server, server_key)
    _write(tmp_path / "client", client, client_key)
    return {
        "ca": tmp_path / "ca.crt",
        "other_ca": tmp_path / "other.crt",
        "server_crt": tmp_path / "server.crt",
        "server_key": tmp_path / "server.key",
        "client_crt": tmp_path / "client.crt",
        "client_key": tmp_path / "client.key",
    }


@pytest.fixture
def mtls_server(pki: dict[str, Path]) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS server that requires a client certificate from the CA and answers tus
    OPTIONS, recording the client certificate's common name."""
    peers: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_OPTIONS(self) -> None:
            cert = self.connection.getpeercert()
            peers.append(dict(x[0] for x in cert["subject"])["commonName"])
            self.send_response(204)
            self.send_header("Tus-Resumable", "1.0.0")
            self.send_header("Tus-Version", "1.0.0")
            self.send_header("Tus-Extension", "creation,checksum,termination")
            self.send_header("Tus-Checksum-Algorithm", "sha256")
            self.end_headers()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pki["server_crt"], pki["server_key"])
    ctx.load_verify_locations(pki["ca"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], peers
    server.shutdown()
    server.server_close()


async def test_client_certificate_is_presented_over_tls13(
    pki: dict[str, Path], mtls_server: tuple[int, list[str]]
) -> None:
    port, peers = mtls_server
    ctx = tls_context(pki["ca"], pki["client_crt"], pki["client_key"])
    async with make_http_client(
        verify=ctx, connect_timeout=5, io_timeout=5, max_connections=2
    ) as http:
        caps = await TusClient(f"https://localhost:{port}/files/", http).discover()
    assert caps.sha256_checksums
    assert peers == ["trailer-test"]


async def test_untrusted_server_is_named_tls(
    pki: dict[str, Path], mtls_server: tuple[int, list[str]]
) -> None:
    port, _ = mtls_server
    ctx = tls_context(pki["other_ca"], pki["client_crt"], pki["client_key"])
    async with make_http_client(
        verify=ctx, connect_timeout=5, io_timeout=5, max_connections=2
    ) as http:
        with pytest.raises(LinkError) as err:
            await TusClient(f"https://localhost:{port}/files/", http).discover()
    assert err.value.kind == "tls"


async def test_unresolvable_name_is_dns_and_closed_port_is_connect() -> None:
    async with make_http_client(
        verify=False, connect_timeout=5, io_timeout=5, max_connections=2
    ) as http:
        with pytest.raises(LinkError) as err:
            await TusClient("http://ingest.invalid/files/", http).discover()
        assert err.value.kind == "dns"
        with pytest.raises(LinkError) as err:
            await TusClient(f"http://127.0.0.1:{free_port()}/files/", http).discover()
        assert err.value.kind == "connect"
