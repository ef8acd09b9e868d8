"""The ingest keeps the traceparent an upload's creation carried, beside (not inside)
its state, so the upload-completed event and every span after it continue the image's
trace; a malformed one is dropped, never refused."""

from __future__ import annotations

import json
from pathlib import Path

from trailerlink_ingest.uploads import UploadInfo, UploadStore

from .test_expiry import _create

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _post_with(ingest, obj, traceparent: str) -> str:  # type: ignore[no-untyped-def]
    with ingest.session() as s:
        rsp = s.post(
            ingest.url,
            headers={
                "Upload-Length": str(obj.meta.sealed_size),
                "Upload-Metadata": obj.meta.encode(),
                "traceparent": traceparent,
            },
            timeout=10,
        )
    assert rsp.status_code == 201, rsp.text
    return rsp.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


def test_the_creations_traceparent_is_kept_with_the_upload(ingest, objects) -> None:  # type: ignore[no-untyped-def]
    store = UploadStore(ingest.storage)
    upload_id = _post_with(ingest, objects(), TRACEPARENT)
    info = store.load("trailer-01", upload_id)
    assert info is not None and store.traceparent(info) == TRACEPARENT
    # info.json is as the previous release wrote it: its replicas still load it.
    directory = store.directory("trailer-01", upload_id)
    assert "traceparent" not in json.loads((directory / "info.json").read_text())


def test_a_malformed_or_absent_traceparent_is_dropped_not_refused(ingest, objects) -> None:  # type: ignore[no-untyped-def]
    store = UploadStore(ingest.storage)
    for upload_id in (
        _post_with(ingest, objects(), "00-nonsense-01"),
        _create(ingest, objects()).rstrip("/").rsplit("/", 1)[-1],
    ):
        info = store.load("trailer-01", upload_id)
        assert info is not None and store.traceparent(info) == ""


def test_an_upload_made_before_traces_were_kept_reads_as_none(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    info = UploadInfo("0" * 32, "trailer-01", 10, 0, {}, 0.0, 0.0)
    assert store.traceparent(info) == ""
