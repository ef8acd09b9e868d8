"""tus 1.0.0 as the independent tuspy client and plain HTTP see it: resume, checksum,
termination, expiration headers, and refusal of anything malformed."""

from __future__ import annotations

import hashlib
import uuid

import pytest
import requests
from tusclient.exceptions import TusCommunicationError, TusUploadFailed
from tusclient.uploader import Uploader

pytestmark = pytest.mark.kafka


def test_options_advertises_version_extensions_and_checksums(ingest):
    with ingest.session() as s:
        rsp = s.options(ingest.url, timeout=10)
    assert rsp.status_code == 204
    assert rsp.headers["Tus-Version"] == "1.0.0"
    extensions = set(rsp.headers["Tus-Extension"].split(","))
    assert {
        "creation",
        "creation-with-upload",
        "checksum",
        "termination",
        "expiration",
    } <= extensions
    assert "sha256" in rsp.headers["Tus-Checksum-Algorithm"].split(",")
    assert int(rsp.headers["Tus-Max-Size"]) > 0


def test_cut_upload_resumes_from_the_reported_offset(ingest, objects):
    obj = objects()
    size = obj.meta.sealed_size
    first = ingest.client().uploader(
        file_path=str(obj.sealed), chunk_size=4096, metadata=obj.metadata, upload_checksum=True
    )
    first.upload(stop_at=size // 2)  # the link drops here
    upload_id = first.url.rsplit("/", 1)[-1]
    with ingest.session() as s:
        head = s.head(first.url, timeout=10)
    assert head.status_code == 200
    offset = int(head.headers["Upload-Offset"])
    assert 0 < offset <= size // 2 + 4096
    assert head.headers["Upload-Length"] == str(size)
    assert "Upload-Expires" in head.headers
    # A fresh client resumes with the URL: it asks for the offset and sends the rest only.
    second = ingest.client().uploader(
        file_path=str(obj.sealed),
        url=first.url,
        chunk_size=4096,
        metadata=obj.metadata,
        upload_checksum=True,
    )
    assert second.offset == offset
    second.upload()
    receipt = ingest.wait_receipt(upload_id)
    assert receipt["outcome"] == "delivered"


class _WrongChecksumUploader(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha1", lambda data: hashlib.sha1(b"not " + data))  # noqa: S324


def test_checksum_mismatch_is_460_and_nothing_is_kept(ingest, objects):
    obj = objects()
    uploader = _WrongChecksumUploader(
        file_path=str(obj.sealed),
        client=ingest.client(),
        chunk_size=4096,
        metadata=obj.metadata,
        upload_checksum=True,
    )
    with pytest.raises(TusUploadFailed) as failed:
        uploader.upload()
    assert failed.value.status_code == 460
    with ingest.session() as s:
        assert s.head(uploader.url, timeout=10).headers["Upload-Offset"] == "0"


def test_sha256_checksum_is_accepted(ingest, objects):
    obj = objects()
    data = obj.sealed.read_bytes()
    with ingest.session() as s:
        created = s.post(
            ingest.url,
            headers={"Upload-Length": str(len(data)), "Upload-Metadata": obj.meta.encode()},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        import base64

        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        rsp = s.patch(
            f"https://127.0.0.1:{ingest.tus_port}{url}",
            data=data,
            headers={
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Checksum": f"sha256 {digest}",
            },
            timeout=30,
        )
    assert rsp.status_code == 204, rsp.text
    assert rsp.headers["Upload-Offset"] == str(len(data))


def test_creation_with_upload_takes_the_first_bytes(ingest, objects):
    obj = objects()
    data = obj.sealed.read_bytes()
    with ingest.session() as s:
        rsp = s.post(
            ingest.url,
            data=data[:1000],
            headers={
                "Upload-Length": str(len(data)),
                "Upload-Metadata": obj.meta.encode(),
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=10,
        )
        assert rsp.status_code == 201, rsp.text
        assert rsp.headers["Upload-Offset"] == "1000"
        url = f"https://127.0.0.1:{ingest.tus_port}{rsp.headers['Location']}"
        wrong = s.patch(
            url,
            data=data[1000:],
            headers={"Upload-Offset": "999", "Content-Type": "application/offset+octet-stream"},
            timeout=10,
        )
        assert wrong.status_code == 409
        done = s.patch(
            url,
            data=data[1000:],
            headers={"Upload-Offset": "1000", "Content-Type": "application/offset+octet-stream"},
            timeout=30,
        )
        assert done.status_code == 204
    ingest.wait_receipt(rsp.headers["Location"].rsplit("/", 1)[-1])


def test_termination_removes_an_unfinished_upload(ingest, objects):
    obj = objects()
    uploader = ingest.client().uploader(
        file_path=str(obj.sealed), chunk_size=1024, metadata=obj.metadata
    )
    uploader.upload(stop_at=1024)
    with ingest.session() as s:
        assert s.delete(uploader.url, timeout=10).status_code == 204
        assert s.head(uploader.url, timeout=10).status_code == 404
        assert s.delete(uploader.url, timeout=10).status_code == 404


def test_a_trailer_sees_only_its_own_uploads_and_receipts(ingest, objects):
    obj = objects()
    uploader = ingest.client("trailer-01").uploader(
        file_path=str(obj.sealed), chunk_size=1024, metadata=obj.metadata
    )
    uploader.upload(stop_at=1024)
    with ingest.session("trailer-02") as other:
        assert other.head(uploader.url, timeout=10).status_code == 404
        assert (
            other.patch(
                uploader.url,
                data=b"x",
                headers={
                    "Upload-Offset": "1024",
                    "Content-Type": "application/offset+octet-stream",
                },
                timeout=10,
            ).status_code
            == 404
        )
        assert other.delete(uploader.url, timeout=10).status_code == 404
    assert all(r["upload_id"] != "x" for r in ingest.receipts("trailer-02"))
    mine = {r["sop_instance_uid"] for r in ingest.receipts("trailer-01")}
    theirs = {r["sop_instance_uid"] for r in ingest.receipts("trailer-02")}
    assert not mine & theirs


@pytest.mark.parametrize(
    "headers,status",
    [
        ({}, 412),  # no Tus-Resumable
        ({"Tus-Resumable": "0.2.2"}, 412),
        ({"Tus-Resumable": "1.0.0"}, 400),  # no Upload-Length
        ({"Tus-Resumable": "1.0.0", "Upload-Length": "-5"}, 400),
        ({"Tus-Resumable": "1.0.0", "Upload-Length": "1e3"}, 400),
        ({"Tus-Resumable": "1.0.0", "Upload-Length": str(10**15)}, 413),
        ({"Tus-Resumable": "1.0.0", "Upload-Length": "100"}, 400),  # no metadata
        ({"Tus-Resumable": "1.0.0", "Upload-Length": "100", "Upload-Metadata": "bad"}, 400),
        (
            {
                "Tus-Resumable": "1.0.0",
                "Upload-Length": "100",
                "Upload-Metadata": "sop_instance_uid !!!",
            },
            400,
        ),
        ({"Tus-Resumable": "1.0.0", "Upload-Defer-Length": "1"}, 400),
    ],
)
def test_malformed_creation_is_a_clear_4xx(ingest, headers, status):
    before = sum(1 for _ in (ingest.storage / "uploads").rglob("info.json"))
    s = requests.Session()
    s.cert, s.verify = ingest.pki.cert("trailer-02"), ingest.pki.ca_file
    rsp = s.post(ingest.url, headers=headers, timeout=10)
    assert rsp.status_code == status, rsp.text
    assert sum(1 for _ in (ingest.storage / "uploads").rglob("info.json")) == before


def test_metadata_must_match_the_length_and_a_known_key(ingest, objects):
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
        from dataclasses import replace

        other = replace(obj.meta, key_id="dc-0123456789abcdef")
        rsp = s.post(
            ingest.url,
            headers={"Upload-Length": str(obj.meta.sealed_size), "Upload-Metadata": other.encode()},
            timeout=10,
        )
        assert rsp.status_code == 400
        assert "key id" in rsp.text


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "0" * 31,
        "0" * 33,
        "g" * 32,
        "A" * 32,
        uuid.uuid4().hex + "%00",
        "info.json",
    ],
)
def test_path_tricks_in_upload_ids_are_404(ingest, path):
    with ingest.session() as s:
        for method in ("HEAD", "PATCH", "DELETE"):
            rsp = s.request(
                method,
                ingest.url + path,
                headers={"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
                data=b"x",
                timeout=10,
            )
            assert rsp.status_code in (404, 405), (method, path, rsp.status_code)


def test_patch_errors(ingest, objects):
    obj = objects()
    uploader = ingest.client().uploader(
        file_path=str(obj.sealed), chunk_size=1024, metadata=obj.metadata
    )
    uploader.upload(stop_at=1024)
    with ingest.session() as s:

        def patch(headers: dict[str, str], data: bytes = b"abc") -> int:
            base = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "1024"}
            return s.patch(
                uploader.url, data=data, headers={**base, **headers}, timeout=10
            ).status_code

        assert patch({"Content-Type": "text/plain"}) == 415
        assert patch({"Upload-Offset": "-1"}) == 400
        assert patch({"Upload-Offset": "0"}) == 409
        assert patch({"Upload-Offset": "5000000"}) == 409
        assert patch({"Upload-Checksum": "crc32 AAAA"}) == 400
        assert patch({"Upload-Checksum": "sha1 not-base64!"}) == 400
        assert patch({}, data=b"x" * (obj.meta.sealed_size + 10)) == 413
        assert patch({"Tus-Resumable": "2.0.0"}) == 412
        assert s.head(uploader.url, timeout=10).headers["Upload-Offset"] == "1024"


def test_unknown_revoked_expired_or_missing_certificates_are_refused(ingest, pki):
    url = ingest.url
    for name in ("other-ca", "expired"):
        with pytest.raises(requests.exceptions.RequestException):
            requests.options(url, cert=pki.cert(name), verify=pki.ca_file, timeout=10)
    with pytest.raises(requests.exceptions.RequestException):
        requests.options(url, verify=pki.ca_file, timeout=10)
    rsp = requests.post(
        url,
        cert=pki.cert("not-listed"),
        verify=pki.ca_file,
        headers={"Tus-Resumable": "1.0.0"},
        timeout=10,
    )
    assert rsp.status_code == 403


def test_tuspy_with_a_revoked_certificate_is_refused_after_a_reload(ingest, objects, pki):
    obj = objects()
    client = ingest.client("trailer-03")
    uploader = client.uploader(file_path=str(obj.sealed), chunk_size=1024, metadata=obj.metadata)
    uploader.upload(stop_at=1024)
    try:
        ingest.write_access(
            ["trailer-01", "trailer-02", "trailer-03"], revoked_serials=[pki.serials["trailer-03"]]
        )
        from trailerlink_testing.waiting import wait_until

        def refused() -> bool:
            with ingest.session("trailer-03") as s:
                return s.head(uploader.url, timeout=10).status_code == 403

        wait_until(refused, 20, "the revocation to be loaded")
        with pytest.raises((TusUploadFailed, TusCommunicationError)) as failed:
            uploader.upload()
        assert getattr(failed.value, "status_code", None) == 403
        assert ingest.metric("trailerlink_ingest_auth_refusals_total") >= 1
    finally:
        ingest.write_access(["trailer-01", "trailer-02", "trailer-03"])
