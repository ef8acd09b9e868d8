"""The HTTPS edge as a hostile or broken peer meets it: a request whose body length is
ambiguous is refused and its connection closed, and every refused TLS handshake is
logged and counted by reason. Real sockets against the running ingest."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

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
