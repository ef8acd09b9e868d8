"""Revocation policy: a trailer revoked while its last PATCH is on the way does not
complete that upload. Its identity is checked again just before the upload would be
marked complete; the refusal is a 403 problem, audited and counted, and nothing of that
upload is announced or reaches PACS."""

from __future__ import annotations

import json
import socket
import ssl
import time

import pytest
from trailerlink_ingest.uploads import UploadStore
from trailerlink_testing.waiting import wait_until

pytestmark = pytest.mark.kafka

TAIL = 100  # bytes the trailer still has to send when it is revoked


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


def test_a_trailer_revoked_mid_patch_cannot_complete_the_upload(own_ingest, pacs, objects):
    ingest = own_ingest(pacs)
    obj = objects()
    body = obj.sealed.read_bytes()
    half = len(body) // 2
    with ingest.session() as s:
        created = s.post(
            ingest.url,
            headers={"Upload-Length": str(len(body)), "Upload-Metadata": obj.meta.encode()},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        path = created.headers["Location"]
        upload_id = path.rsplit("/", 1)[-1]
        first = s.patch(
            f"https://127.0.0.1:{ingest.tus_port}{path}",
            data=body[:half],
            headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
            timeout=10,
        )
        assert first.status_code == 204, first.text

    # The last PATCH: admitted when it starts, all but its last bytes sent...
    context = ssl.create_default_context(cafile=ingest.pki.ca_file)
    context.load_cert_chain(*ingest.pki.cert("trailer-01"))
    sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", ingest.tus_port), timeout=30),
        server_hostname="localhost",
    )
    rest = body[half:]
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {half}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {len(rest)}\r\nConnection: close\r\n\r\n"
    )
    try:
        sock.sendall(head.encode() + rest[:-TAIL])
        wait_until(
            lambda: ingest.metric("trailerlink_ingest_uploads_active") >= 1,
            10,
            "the last PATCH is being received",
        )
        # ...then the trailer is revoked, then the last bytes arrive.
        ingest.write_access(["trailer-02", "trailer-03"], revoked=["trailer-01"])
        sock.sendall(rest[-TAIL:])
        answer = _answer(sock, 30)
    finally:
        sock.close()

    status_line, _, rest_of_answer = answer.partition("\r\n")
    assert status_line == "HTTP/1.1 403 Forbidden", answer
    headers, _, problem_text = rest_of_answer.partition("\r\n\r\n")
    assert "content-type: application/problem+json" in headers.lower()
    problem = json.loads(problem_text)
    assert problem["status"] == 403 and "revoked" in problem["detail"]

    info = UploadStore(ingest.storage).load("trailer-01", upload_id)
    assert info is not None and info.offset == half and not info.complete
    assert not info.announced
    assert ingest.metric("trailerlink_ingest_completions_refused_total") == 1
    refusals = [
        line for line in ingest.log_text().splitlines() if "upload completion refused" in line
    ]
    assert len(refusals) == 1 and upload_id in refusals[0] and "trailer-01" in refusals[0]
    assert obj.meta.sop_instance_uid not in refusals[0]
    assert pacs.find_instance(obj.meta.sop_instance_uid) is None
