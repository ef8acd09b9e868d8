"""Every refused upload creation says why in a problem+json body (reason, permanent),
is logged with the trailer and reason (no object identity) and counted by both, so the
uplink can fail an object that can never go and support can see who is refused."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytestmark = pytest.mark.kafka


def _refusals(ingest, trailer: str, reason: str) -> float:
    from trailerlink_testing.procs import http_get

    name = "trailerlink_ingest_upload_refusals_total"
    for line in http_get(f"http://127.0.0.1:{ingest.http_port}/metrics").splitlines():
        if line.startswith(f'{name}{{reason="{reason}",trailer="{trailer}"}}') or line.startswith(
            f'{name}{{trailer="{trailer}",reason="{reason}"}}'
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_retired_key_is_a_permanent_refusal_logged_and_counted_by_trailer(ingest, objects):
    obj = objects()
    retired = replace(obj.meta, key_id="dc-0123456789abcdef")
    before = _refusals(ingest, "trailer-01", "unknown_key")
    with ingest.session() as s:
        rsp = s.post(
            ingest.url,
            headers={
                "Upload-Length": str(obj.meta.sealed_size),
                "Upload-Metadata": retired.encode(),
            },
            timeout=10,
        )
    assert rsp.status_code == 400
    assert rsp.headers["Content-Type"].startswith("application/problem+json")
    problem = rsp.json()
    assert problem["type"] == "urn:trailerlink:upload-refused:unknown_key"
    assert problem["reason"] == "unknown_key" and problem["permanent"] is True
    assert _refusals(ingest, "trailer-01", "unknown_key") == before + 1
    lines = [
        json.loads(line)
        for line in ingest.log_text().splitlines()
        if "upload creation refused" in line
    ]
    assert lines, "the refusal was not logged"
    last = lines[-1]
    assert last["trailer"] == "trailer-01" and last["reason"] == "unknown_key"
    assert last["permanent"] is True
    # The trailer names the object; the ingest's log line does not.
    assert obj.meta.sop_instance_uid not in json.dumps(last)
    assert obj.meta.study_instance_uid not in json.dumps(last)


def test_bad_metadata_is_permanent_and_a_rate_limit_is_not(ingest, objects):
    obj = objects()
    with ingest.session() as s:
        rsp = s.post(
            ingest.url,
            headers={
                "Upload-Length": str(obj.meta.sealed_size + 1),
                "Upload-Metadata": obj.meta.encode(),
            },
            timeout=10,
        )
        assert rsp.status_code == 400
        assert rsp.json()["reason"] == "invalid_metadata" and rsp.json()["permanent"] is True
        rsp = s.post(
            ingest.url,
            headers={"Upload-Length": "12", "Upload-Metadata": "sop_instance_uid !!"},
            timeout=10,
        )
        assert rsp.status_code == 400
        assert rsp.json()["reason"] == "invalid_metadata"
    # Not the object's fault: a trailer the ingest does not admit may be reinstated.
    with ingest.session("not-listed") as s:
        rsp = s.post(
            ingest.url,
            headers={
                "Upload-Length": str(obj.meta.sealed_size),
                "Upload-Metadata": obj.meta.encode(),
            },
            timeout=10,
        )
    assert rsp.status_code == 403
    assert rsp.json()["reason"] == "trailer_refused" and rsp.json()["permanent"] is False
    assert _refusals(ingest, "unknown", "trailer_refused") >= 1
