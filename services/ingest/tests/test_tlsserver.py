"""The HTTPS edge as a hostile or broken peer meets it: a request whose body length is
ambiguous is refused and its connection closed, and every refused TLS handshake is
logged and counted by reason. Real sockets against the running ingest."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from trailerlink_testing.procs import http_get
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka


def _tls_socket(ingest, cert: str | None = "trailer-01") -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ingest.pki.ca_file)
    if cert is not None:
        context.load_cert_chain(*ingest.pki.cert(cert))
    raw = socket.create_connection(("127.0.0.1", ingest.tus_port), timeout=30)
    return context.wrap_socket(raw, server_hostname="localhost")


def _read_until_closed(sock: ssl.SSLSocket, timeout: float) -> tuple[bytes, bool]:
    """What the server sends, and whether it closed the connection within ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except (ssl.SSLError, OSError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def test_content_length_with_transfer_encoding_is_refused_and_the_connection_closed(
    ingest,
) -> None:
    # RFC 9112 6.1: a message with both may be an attempt at request smuggling; a server
    # must treat it as an error and close the connection after answering. The second,
    # pipelined request must never be read as a request of its own.
    smuggled = (
        b"POST /files/ HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n"
        b"Upload-Length: 10\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
        b"OPTIONS /files/ HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n\r\n"
    )
    sock = _tls_socket(ingest)
    try:
        sock.sendall(smuggled)
        answer, closed = _read_until_closed(sock, 20)
    finally:
        sock.close()
    text = answer.decode(errors="replace")
    assert text.startswith("HTTP/1.1 400"), text
    assert "connection: close" in text.lower(), text
    assert text.count("HTTP/1.1 ") == 1, f"the pipelined request was answered too: {text}"
    assert closed, "the connection was kept open after the ambiguous request"


def _try_tls(ingest, cert: str | None, maximum: ssl.TLSVersion | None = None) -> None:
    """A client that connects, handshakes and asks for something; the server refuses it
    at the handshake (seen here as any TLS or socket error, or an empty answer)."""
    context = ssl.create_default_context(cafile=ingest.pki.ca_file)
    if cert is not None:
        context.load_cert_chain(*ingest.pki.cert(cert))
    if maximum is not None:
        context.maximum_version = maximum
    raw = socket.create_connection(("127.0.0.1", ingest.tus_port), timeout=30)
    try:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"OPTIONS /files/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer, _ = _read_until_closed(sock, 20)
        assert not answer, f"the server answered a refused client: {answer!r}"
    except (ssl.SSLError, OSError):
        pass
    finally:
        raw.close()


def _failures(ingest) -> dict[str, float]:
    counts: dict[str, float] = {}
    prefix = "trailerlink_ingest_tls_handshake_failures_total{"
    for line in http_get(f"http://127.0.0.1:{ingest.http_port}/metrics").splitlines():
        if line.startswith(prefix):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


@pytest.mark.parametrize(
    ("cert", "maximum", "reason", "detail"),
    [
        (None, None, "no_certificate", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
        ("other-ca", None, "unknown_ca", "unable to get local issuer certificate"),
        ("expired", None, "expired", "certificate has expired"),
        ("trailer-01", ssl.TLSVersion.TLSv1_2, "protocol_version", "UNSUPPORTED_PROTOCOL"),
    ],
)
def test_a_refused_tls_handshake_is_logged_and_counted_by_reason(
    own_ingest, cert, maximum, reason, detail
) -> None:
    ingest = own_ingest(None)
    before = _failures(ingest)
    assert before.get(reason) == 0, "every reason is exported from the start"
    _try_tls(ingest, cert, maximum)
    after = wait_until(
        lambda: (c := _failures(ingest)).get(reason, 0) > before[reason] and c,
        10,
        f"a {reason} handshake failure counted",
    )
    assert after[reason] == before[reason] + 1
    assert sum(after.values()) == sum(before.values()) + 1, after  # that reason alone

    def logged() -> str | None:
        return next(
            (
                line
                for line in ingest.log_text().splitlines()
                if "TLS handshake failed" in line and f'"reason": "{reason}"' in line
            ),
            None,
        )

    line = wait_until(logged, 10, "the handshake failure logged")
    assert '"peer": "127.0.0.1"' in line and detail in line and '"WARNING"' in line, line
    # A trailer that does handshake is served as before.
    with ingest.session() as s:
        assert s.options(ingest.url, timeout=10).status_code == 204


def test_plain_http_and_a_bare_connect_are_counted_and_a_health_check_is_not_a_warning(
    own_ingest,
) -> None:
    ingest = own_ingest(None)
    with socket.create_connection(("127.0.0.1", ingest.tus_port), timeout=30) as plain:
        plain.sendall(b"GET /files/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
        plain.settimeout(20)
        try:
            answer = plain.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert answer == b"", answer  # refused: closed without an HTTP answer
    # What a load balancer's TCP health check does: connect, then close.
    socket.create_connection(("127.0.0.1", ingest.tus_port), timeout=30).close()
    wait_until(
        lambda: _failures(ingest).get("not_tls") == 1 and _failures(ingest).get("closed") == 1,
        10,
        "plain HTTP and a bare connect counted",
    )
    lines = [line for line in ingest.log_text().splitlines() if "TLS handshake failed" in line]
    assert any('"reason": "not_tls"' in line for line in lines), lines
    assert not any('"reason": "closed"' in line for line in lines), lines
    with ingest.session() as s:
        assert s.options(ingest.url, timeout=10).status_code == 204
