"""Sealing-key rotation at a real ingest: the admin API (rotate, status, retire), the
trailer-facing key listing and unsent report over mutual TLS, and the processor opening
objects sealed for the old and the new key alike (delivered into Orthanc)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from trailerlink_sealed import OpeningKey, RecipientKey

from .conftest import TRAILERS, Ingest, make_object, start_ingest

pytestmark = pytest.mark.kafka
TOKEN = "ingest-keys-test-token"


@pytest.fixture
def keyed_ingest(
    tmp_path: Path, pki, kafka_bootstrap: str, pacs
) -> Iterator[tuple[Ingest, Path, OpeningKey]]:
    """An ingest with its own key directory (rotation writes there) and the admin API."""
    keys = tmp_path / "sealing-keys"
    keys.mkdir()
    key = OpeningKey.generate()
    (keys / f"{key.key_id}.pem").write_bytes(key.to_pem())
    token = tmp_path / "token"
    token.write_text(TOKEN)
    running = start_ingest(
        tmp_path / "ingest",
        pki,
        keys,
        kafka_bootstrap,
        pacs,
        extra_env={
            "TRAILERLINK_ADMIN_TOKEN_FILE": str(token),
            "TRAILERLINK_KEY_RETIRE_SETTLE_SECONDS": "0",
        },
    )
    try:
        yield running, keys, key
    finally:
        running.proc.terminate()


def _admin(ingest: Ingest, method: str, path: str) -> requests.Response:
    return requests.request(
        method,
        f"http://127.0.0.1:{ingest.http_port}/v1/admin/keys{path}",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Trailerlink-Actor": "tester"},
        timeout=30,
    )


def _keys_url(ingest: Ingest) -> str:
    return f"https://127.0.0.1:{ingest.tus_port}/v1/keys"


def _report(ingest: Ingest, cert: str, body: object) -> int:
    with ingest.session(cert) as s:
        return s.put(_keys_url(ingest) + "/unsent", json=body, timeout=10).status_code


def test_rotate_then_both_keys_open_and_retire_waits_for_what_is_outstanding(
    keyed_ingest, tmp_path: Path, stored_sha, pacs
) -> None:
    ingest, keys_dir, old = keyed_ingest
    rotated = _admin(ingest, "POST", "/rotate")
    assert rotated.status_code == 200, rotated.text
    new_id = rotated.json()["key_id"]
    assert rotated.json()["previous_key_id"] == old.key_id
    assert (keys_dir / f"{new_id}.pem").stat().st_mode & 0o777 == 0o600

    # A trailer sees the public keys and the current id, never a private key.
    with ingest.session("trailer-01") as s:
        listing = s.get(_keys_url(ingest), timeout=10)
    assert listing.status_code == 200
    assert listing.json()["current_key_id"] == new_id
    assert "PRIVATE" not in listing.text
    pems = {k["key_id"]: k["public_key_pem"] for k in listing.json()["keys"]}
    assert set(pems) == {old.key_id, new_id}
    new_public = RecipientKey.from_pem(pems[new_id].encode())
    with ingest.session("not-listed") as s:
        assert s.get(_keys_url(ingest), timeout=10).status_code == 403

    # Objects sealed for either key open (this ingest loaded the new key at run time).
    before = make_object(tmp_path / "objects", old, seed=101)
    after = make_object(tmp_path / "objects", _Recipient(new_public), seed=102)  # type: ignore[arg-type]
    for obj in (before, after):
        receipt = ingest.wait_receipt(ingest.upload(obj))
        assert receipt["outcome"] == "delivered", receipt
        assert stored_sha(pacs, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256

    # The old key is needed while an upload sealed for it is unfinished ...
    pending = make_object(tmp_path / "objects", old, seed=103)
    with ingest.session("trailer-01") as s:
        created = s.post(
            ingest.url,
            headers={
                "Upload-Length": str(pending.meta.sealed_size),
                "Upload-Metadata": pending.meta.encode(),
            },
            timeout=10,
        )
    assert created.status_code == 201
    refused = _admin(ingest, "POST", f"/{old.key_id}/retire")
    assert refused.status_code == 409 and "in progress" in refused.json()["detail"]
    # ... and while trailers have not said they hold nothing sealed for it.
    with ingest.session("trailer-01") as s:
        upload_url = f"https://127.0.0.1:{ingest.tus_port}{created.headers['Location']}"
        assert s.delete(upload_url, timeout=10).status_code == 204
    assert (
        _report(
            ingest, "trailer-01", {"sealing_key_id": new_id, "unsent_by_key_id": {old.key_id: 2}}
        )
        == 204
    )
    status = _admin(ingest, "GET", "").json()
    [old_status] = [k for k in status["keys"] if k["key_id"] == old.key_id]
    assert old_status["outstanding"]["trailers_unsent"] == 2 and not old_status["retirable"]
    assert any("not reported" in b for b in old_status["blockers"])  # trailer-02, -03
    refused = _admin(ingest, "POST", f"/{old.key_id}/retire")
    assert (
        refused.status_code == 409 and "2 objects sealed with it unsent" in refused.json()["detail"]
    )
    assert (keys_dir / f"{old.key_id}.pem").exists()

    for n, trailer in enumerate(TRAILERS):
        # Delivered objects whose spool copies a resend could still send (per key).
        assert (
            _report(
                ingest,
                trailer,
                {
                    "sealing_key_id": new_id,
                    "unsent_by_key_id": {new_id: 1},
                    "resendable_by_key_id": {old.key_id: 10 + n},
                },
            )
            == 204
        )
    resendable = sum(10 + n for n in range(len(TRAILERS)))
    [old_status] = [
        k for k in _admin(ingest, "GET", "").json()["keys"] if k["key_id"] == old.key_id
    ]
    assert old_status["unresendable_if_retired"] == resendable and old_status["retirable"]
    retired = _admin(ingest, "POST", f"/{old.key_id}/retire")
    assert retired.status_code == 200, retired.text
    assert retired.json()["unresendable_spool_copies"] == resendable
    assert not (keys_dir / f"{old.key_id}.pem").exists()
    # Uploads sealed for the retired key are now refused up front.
    late = make_object(tmp_path / "objects", old, seed=104)
    with ingest.session("trailer-01") as s:
        assert (
            s.post(
                ingest.url,
                headers={
                    "Upload-Length": str(late.meta.sealed_size),
                    "Upload-Metadata": late.meta.encode(),
                },
                timeout=10,
            ).status_code
            == 400
        )


class _Recipient:
    """Seals for a public key only (what make_object needs of a key: ``.recipient``)."""

    def __init__(self, recipient: RecipientKey) -> None:
        self.recipient = recipient


def test_bad_requests_change_nothing(keyed_ingest) -> None:
    ingest, keys_dir, key = keyed_ingest
    before = sorted(p.name for p in keys_dir.iterdir())
    for body in (
        {"unsent_by_key_id": {"../x": 1}},
        {"unsent_by_key_id": {key.key_id: -1}},
        {"unsent_by_key_id": "lots"},
        ["x"],
        {"sealing_key_id": 7, "unsent_by_key_id": {}},
    ):
        assert _report(ingest, "trailer-01", body) == 400
    with ingest.session("trailer-01") as s:
        assert (
            s.put(
                _keys_url(ingest) + "/unsent",
                data=b"{not json",
                timeout=10,
                headers={"Content-Type": "application/json"},
            ).status_code
            == 400
        )
    status = _admin(ingest, "GET", "").json()
    assert all(t["reported_at"] is None for t in status["trailers"])

    assert _admin(ingest, "POST", "/dc-0000000000000000/retire").status_code == 404
    assert _admin(ingest, "POST", "/not-a-key/retire").status_code == 400
    assert _admin(ingest, "POST", f"/{key.key_id}/retire").status_code == 409  # current
    no_token = requests.post(
        f"http://127.0.0.1:{ingest.http_port}/v1/admin/keys/rotate", timeout=10
    )
    assert no_token.status_code == 401
    assert sorted(p.name for p in keys_dir.iterdir()) == before
