"""Failed and abandoned uploads expire so no trailer can fill the shared volume: with a
short ``UPLOAD_EXPIRY_SECONDS`` the sweeper removes an upload left half-sent and one
whose receipt says it failed verification, counts the bytes it freed and logs each
without patient data — and leaves alone an upload that a request is still writing,
however long it has been idle on disk."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from trailerlink_ingest.uploads import UploadStore
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka

EXPIRY = 3


def _create(ingest, obj) -> str:
    """POST a new upload; its path."""
    with ingest.session() as s:
        rsp = s.post(
            ingest.url,
            headers={
                "Upload-Length": str(obj.meta.sealed_size),
                "Upload-Metadata": obj.meta.encode(),
            },
            timeout=10,
        )
    assert rsp.status_code == 201, rsp.text
    return rsp.headers["Location"]


def _answer(sock: ssl.SSLSocket, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ssl.SSLError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def test_failed_and_abandoned_uploads_expire_but_one_being_written_is_kept(
    own_ingest, objects
) -> None:
    ingest = own_ingest(
        None,
        extra_env={
            "TRAILERLINK_UPLOAD_EXPIRY_SECONDS": str(EXPIRY),
            "TRAILERLINK_BODY_IDLE_TIMEOUT_SECONDS": "300",
        },
    )
    store = UploadStore(ingest.storage)
    uploads = ingest.storage / "uploads" / "trailer-01"
    base = f"https://127.0.0.1:{ingest.tus_port}"
    assert ingest.metric("trailerlink_ingest_expired_bytes_total") == 0  # exported from start

    # Being written: a PATCH that sent half its body and is still open (it holds the lock).
    written = objects()
    written_body = written.sealed.read_bytes()
    written_path = _create(ingest, written)
    written_id = written_path.rsplit("/", 1)[-1]
    context = ssl.create_default_context(cafile=ingest.pki.ca_file)
    context.load_cert_chain(*ingest.pki.cert("trailer-01"))
    writer = context.wrap_socket(
        socket.create_connection(("127.0.0.1", ingest.tus_port), timeout=30),
        server_hostname="localhost",
    )
    head = (
        f"PATCH {written_path} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(written_body)}\r\nConnection: close\r\n\r\n"
    )
    half = len(written_body) // 2
    try:
        writer.sendall(head.encode() + written_body[:half])
        wait_until(
            lambda: ingest.metric("trailerlink_ingest_uploads_active") >= 1,
            10,
            "the PATCH is being received",
        )

        # Failed: a tampered sealed object, completed, verified, failed.
        failed = objects()
        tampered = bytearray(failed.sealed.read_bytes())
        tampered[-100] ^= 0x01
        failed.sealed.write_bytes(bytes(tampered))
        failed_id = ingest.upload(failed)
        assert ingest.wait_receipt(failed_id)["reason_code"] == "VERIFY_FAILED"

        # Abandoned: half sent, then nothing more (created last: idle the shortest).
        abandoned = objects()
        abandoned_body = abandoned.sealed.read_bytes()
        abandoned_path = _create(ingest, abandoned)
        abandoned_id = abandoned_path.rsplit("/", 1)[-1]
        with ingest.session() as s:
            rsp = s.patch(
                base + abandoned_path,
                data=abandoned_body[:half],
                headers={
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
                timeout=10,
            )
            assert rsp.status_code == 204, rsp.text

        wait_until(
            lambda: not (uploads / abandoned_id).exists() and not (uploads / failed_id).exists(),
            60,
            "the abandoned and the failed upload to expire",
            interval=0.2,
        )
        # Each pass looks at every upload, and the one being written has been idle on
        # disk longer than the abandoned one: it was due, and was left for its lock.
        assert store.load("trailer-01", written_id) is not None
        assert not any(p.name.startswith(".expired-") for p in uploads.iterdir())
        with ingest.session() as s:
            assert s.head(base + abandoned_path, timeout=10).status_code == 404

        writer.sendall(written_body[half:])
        assert _answer(writer, 30).startswith("HTTP/1.1 204"), "the written upload was cut off"
    finally:
        writer.close()
    kept = store.load("trailer-01", written_id)
    assert kept is not None and kept.complete

    freed = ingest.metric("trailerlink_ingest_expired_bytes_total")
    assert freed >= half + failed.meta.sealed_size
    assert ingest.metric("trailerlink_ingest_uploads_expired_total") == 2
    lines = [line for line in ingest.log_text().splitlines() if "upload expired" in line]
    assert len(lines) == 2
    assert any(abandoned_id in line and "abandoned" in line for line in lines), lines
    assert any(failed_id in line and "failed" in line for line in lines), lines
    for line in lines:
        for obj in (failed, abandoned):
            assert obj.meta.sop_instance_uid not in line
            assert obj.meta.study_instance_uid not in line
