"""The shared uploads volume full, for real: the ingest's storage on a small tmpfs.

A creation larger than the free space, and a body that runs out of space halfway, are
refused 507 with a problem body saying so; the upload's durable offset stands, no
half-made upload is left behind, and once space is freed the same upload resumes from
its offset and reaches PACS byte-identical — the bytes that did not fit were never
counted as received."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

VOLUME_BYTES = 4 << 20


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test and unmounted after it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a size-limited tmpfs needs root")
    volume = tmp_path / "uploads-volume"
    volume.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={VOLUME_BYTES},mode=0700", "tmpfs", str(volume)],
        check=True,
        capture_output=True,
    )
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False, capture_output=True)


def _patch(session, url: str, offset: int, data: bytes):  # type: ignore[no-untyped-def]
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    return session.patch(
        url,
        data=data,
        headers={
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": f"sha256 {digest}",
        },
        timeout=30,
    )


def test_a_full_volume_refuses_507_keeps_the_offset_and_resumes_once_freed(
    own_ingest, pacs, objects, stored_sha, small_volume: Path
) -> None:
    ingest = own_ingest(pacs, extra_env={"TRAILERLINK_STORAGE_DIR": str(small_volume)})
    obj = objects()
    data = obj.sealed.read_bytes()
    assert len(data) < VOLUME_BYTES // 2, "the test object must fit the volume twice"
    base = f"https://127.0.0.1:{ingest.tus_port}"

    with ingest.session() as s:
        # Larger than the whole volume: refused before anything is made.
        huge = dataclasses.replace(obj.meta, sealed_size=VOLUME_BYTES * 2)
        too_big = s.post(
            ingest.url,
            headers={"Upload-Length": str(VOLUME_BYTES * 2), "Upload-Metadata": huge.encode()},
            timeout=10,
        )
        assert too_big.status_code == 507, too_big.text
        problem = too_big.json()
        assert problem["title"] == "Insufficient Storage"
        assert "full" in problem["detail"]
        assert too_big.headers["Retry-After"]
        assert _uploads(small_volume) == []

        created = s.post(
            ingest.url,
            headers={"Upload-Length": str(len(data)), "Upload-Metadata": obj.meta.encode()},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        url = base + created.headers["Location"]
        assert len(_uploads(small_volume)) == 1

        # Another tenant of the volume leaves room for less than half of the body.
        filler = small_volume / "filler"
        _fill(filler, leave=len(data) // 2)
        refused = _patch(s, url, 0, data)
        assert refused.status_code == 507, refused.text
        assert "retry later" in refused.json()["detail"]
        assert s.head(url, timeout=10).headers["Upload-Offset"] == "0"
        assert ingest.metric("trailerlink_ingest_storage_full_total") == 2
        assert ingest.metric("trailerlink_ingest_uploads_completed_total") == 0

        filler.unlink()
        resumed = _patch(s, url, 0, data)
        assert resumed.status_code == 204, resumed.text
        assert resumed.headers["Upload-Offset"] == str(len(data))

    upload_id = url.rsplit("/", 1)[-1]
    receipt = ingest.wait_receipt(upload_id)
    assert receipt["outcome"] == "delivered", receipt
    assert stored_sha(pacs, obj.meta.sop_instance_uid) == obj.meta.dataset_sha256
    assert "uploads volume full" in ingest.log_text()


def _uploads(volume: Path) -> list[Path]:
    """Every upload directory (or leftover of one) under the storage root: named by a
    32-hex upload id, wherever the layout puts it."""
    return [p for p in volume.rglob("*") if re.fullmatch(r"[0-9a-f]{32}", p.name)]


def _fill(path: Path, leave: int) -> None:
    """Write ``path`` until only about ``leave`` bytes of its file system are free."""
    free = shutil.disk_usage(path.parent).free
    with open(path, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
        f.flush()
        os.fsync(f.fileno())
