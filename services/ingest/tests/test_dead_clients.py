"""No dead client keeps an upload: a body that stops arriving ends at the body deadline,
a quiet writer yields to the resumed request, a live one is left alone, accepted
connections carry keepalive, and small bodies are bounded.

The stalled client is a real TLS connection with the trailer's certificate that sends
the PATCH headers and half the body, then nothing, and never closes: to the ingest this
is exactly a trailer whose 4G link died (no FIN, no RST).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from trailerlink_events.wire import encode_metadata
from trailerlink_ingest.uploads import UploadStore, UploadVanished
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka


def _create(ingest, obj) -> str:
    """POST a new upload; its URL."""
    meta = encode_metadata(obj.metadata)
    with ingest.session() as s:
        rsp = s.post(
            ingest.url,
            headers={"Upload-Length": str(obj.meta.sealed_size), "Upload-Metadata": meta},
            timeout=10,
        )
    assert rsp.status_code == 201, rsp.text
    return f"https://127.0.0.1:{ingest.tus_port}" + rsp.headers["Location"]


def _tls_socket(ingest) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=ingest.pki.ca_file)
    ctx.load_cert_chain(*ingest.pki.cert("trailer-01"))
    raw = socket.create_connection(("127.0.0.1", ingest.tus_port), timeout=60)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _stalled_patch(ingest, url: str, body: bytes, send: int) -> ssl.SSLSocket:
    """A PATCH of all of ``body`` (checksummed) that sends only ``send`` bytes of it and
    then goes silent, the connection left open."""
    sock = _tls_socket(ingest)
    path = url.split(str(ingest.tus_port), 1)[1]
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Checksum: sha256 {digest}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:send])
    return sock


def _answer(sock: ssl.SSLSocket, timeout: float) -> str:
    """What the server sends until it closes the connection (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not (chunk := sock.recv(4096)):
                break
            data += chunk
    except (TimeoutError, ssl.SSLError, OSError):
        pass
    return data.decode(errors="replace")


def _patch(ingest, url: str, body: bytes) -> tuple[int, float]:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    started = time.monotonic()
    with ingest.session() as s:
        rsp = s.patch(
            url,
            data=body,
            timeout=60,
            headers={
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Checksum": f"sha256 {digest}",
            },
        )
    return rsp.status_code, time.monotonic() - started


def _offset(ingest, url: str) -> int:
    with ingest.session() as s:
        return int(s.head(url, timeout=10).headers["Upload-Offset"])


def test_a_body_that_stops_arriving_ends_at_the_deadline_and_frees_the_upload(
    own_ingest, objects
) -> None:
    ingest = own_ingest(None, extra_env={"TRAILERLINK_BODY_IDLE_TIMEOUT_SECONDS": "2"})
    obj = objects()
    body = obj.sealed.read_bytes()
    url = _create(ingest, obj)
    stalled = _stalled_patch(ingest, url, body, len(body) // 2)
    try:
        answer = _answer(stalled, 30)
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "connection: close" in answer.lower()
    finally:
        stalled.close()
    assert _offset(ingest, url) == 0  # half a checksummed body is not kept
    status, _ = _patch(ingest, url, body)
    assert status == 204
    assert _offset(ingest, url) == len(body)
    assert ingest.metric("trailerlink_ingest_upload_bodies_interrupted_total") >= 1
    assert "upload body ended early" in ingest.log_text()


def test_the_resumed_request_takes_the_upload_over_from_a_quiet_one(own_ingest, objects) -> None:
    # The deadline is far away: only the takeover can let the resume in.
    ingest = own_ingest(None, extra_env={"TRAILERLINK_BODY_IDLE_TIMEOUT_SECONDS": "300"})
    obj = objects()
    body = obj.sealed.read_bytes()
    url = _create(ingest, obj)
    stalled = _stalled_patch(ingest, url, body, len(body) // 3)
    try:
        wait_until(
            lambda: ingest.metric("trailerlink_ingest_uploads_active") >= 1,
            10,
            "the stalled PATCH is being received",
        )
        status, took = _patch(ingest, url, body)
        assert status == 204, "the resume was refused (423: the dead request kept the lock)"
        assert took < 8, f"the resume waited {took:.1f} s for the lock"
        assert "takeover" in _answer(stalled, 10)
    finally:
        stalled.close()
    assert _offset(ingest, url) == len(body)


def test_a_writer_still_receiving_bytes_is_not_taken_over(own_ingest, objects) -> None:
    ingest = own_ingest(None)
    obj = objects()
    body = obj.sealed.read_bytes()
    url = _create(ingest, obj)
    slow = _stalled_patch(ingest, url, body, 1024)
    done = threading.Event()

    def trickle() -> None:  # a slow link, but a live one: a few bytes every 0.3 s
        sent = 1024
        while not done.is_set() and sent < len(body) - 64:
            try:
                slow.sendall(body[sent : sent + 64])
            except OSError:
                return
            sent += 64
            done.wait(0.3)

    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    try:
        wait_until(
            lambda: ingest.metric("trailerlink_ingest_uploads_active") >= 1,
            10,
            "the slow PATCH is being received",
        )
        status, _ = _patch(ingest, url, body)
        assert status == 423
        assert "upload locked by a request still receiving bytes" in ingest.log_text()
    finally:
        done.set()
        writer.join(5)
        slow.close()


def test_accepted_connections_carry_keepalive(own_ingest) -> None:
    ingest = own_ingest(None)
    sock = _tls_socket(ingest)
    try:

        def keepalive_timer() -> bool:
            shown = subprocess.run(
                ["ss", "-tnoH", "state", "established", "sport", f"= :{ingest.tus_port}"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
            return "keepalive" in shown

        wait_until(keepalive_timer, 10, "a keepalive timer on the accepted connection")
    finally:
        sock.close()


def test_small_bodies_are_bounded_in_size_and_depth(own_ingest) -> None:
    ingest = own_ingest(None)
    report = f"https://127.0.0.1:{ingest.tus_port}/v1/keys/unsent"

    def chunked(total: int):
        for _ in range(total // 4096):
            yield b" " * 4096

    with ingest.session() as s:
        assert s.put(report, data=chunked(64 * 1024), timeout=30).status_code == 413
        deep = b"[" * 5000 + b"]" * 5000
        rsp = s.put(report, data=deep, timeout=30)
        assert rsp.status_code == 400 and "nested" in rsp.text


def test_a_vanished_upload_is_not_locked_again(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    directory = store.directory("trailer-01", "0" * 32)
    directory.mkdir(parents=True)

    async def lock() -> None:
        async with store.locked("trailer-01", "0" * 32):
            pass

    with pytest.raises(UploadVanished):
        asyncio.run(lock())
    assert not (directory / "lock").exists()


def test_a_peer_dripping_its_request_headers_is_closed_at_the_head_deadline(own_ingest) -> None:
    """A slowloris on the request head: uvicorn's keep-alive timer stops at the first
    byte and nothing else bounded it. The connection is closed at the deadline, counted,
    and a well-behaved request on another connection is served meanwhile."""
    ingest = own_ingest(None, extra_env={"TRAILERLINK_REQUEST_HEAD_TIMEOUT_SECONDS": "2"})
    context = ssl.create_default_context(cafile=ingest.pki.ca_file)
    context.load_cert_chain(*ingest.pki.cert("trailer-01"))
    raw = socket.create_connection(("127.0.0.1", ingest.tus_port), timeout=30)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    started = time.monotonic()
    closed = False
    try:
        sock.sendall(b"HEAD /files/ HTTP/1.1\r\n")
        for byte in b"Host: localhost\r\nTus-Resumable: 1.0.0\r\nX-Slow: " + b"a" * 40:
            sock.sendall(bytes((byte,)))
            sock.settimeout(0.25)  # the attacker's pace: one byte every 250 ms at most
            try:
                if sock.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (ssl.SSLError, OSError):
                closed = True
                break
    except OSError:
        closed = True
    finally:
        sock.close()
    assert closed, "the dripping connection was never closed"
    assert time.monotonic() - started < 10
    with ingest.session() as s:  # others are served all along
        assert s.options(ingest.url, timeout=10).status_code in (200, 204)
    wait_until(
        lambda: ingest.metric("trailerlink_ingest_connections_closed_total") >= 1,
        10,
        "the closed connection counted",
    )
