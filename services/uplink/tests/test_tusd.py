"""The tus client against tusd, the reference tus server."""

from __future__ import annotations

import asyncio
import base64

from trailerlink_testing.tusd import Tusd
from trailerlink_testing.waiting import async_wait_until
from trailerlink_uplink.queue import STATE_UPLOADED, SendQueue

from .conftest import Outgoing


def _meta(upload: dict) -> dict[str, str]:
    return dict(upload.get("MetaData") or {})


async def test_objects_arrive_byte_identical_with_identity_metadata(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    objs = [outgoing.sealed(size) for size in (1, 70_000, 300_000)]
    for obj in objs:
        queue.enqueue(obj)
    rig = make_rig(queue, outgoing, tusd.url, chunk=64 * 1024, concurrency=2)
    running(rig)
    await async_wait_until(lambda: _done(queue, 3), 30, "three uploads complete")
    uploads = tusd.uploads()
    assert len(uploads) == 3
    by_sop = {_meta(u)["sop_instance_uid"]: u for u in uploads}
    for obj in objs:
        upload = by_sop[obj.sop_instance_uid]
        assert upload["Size"] == obj.sealed_size == tusd.offset(upload["ID"])
        assert tusd.data(upload["ID"]) == outgoing.read(obj)
        meta = _meta(upload)
        assert meta["dataset_sha256"] == obj.dataset_sha256
        assert meta["sealed_size"] == str(obj.sealed_size)
        assert meta["key_id"] == "dc-0123456789abcdef"


async def _done(queue: SendQueue, n: int) -> bool:
    return queue.states().get(STATE_UPLOADED, 0) == n


async def test_restart_resumes_the_same_upload(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    obj = outgoing.sealed(600_000)
    queue.enqueue(obj)
    slow = make_rig(queue, outgoing, tusd.url, chunk=32 * 1024, rate=150_000)
    stop = running(slow)

    async def partly() -> bool:
        ups = tusd.uploads()
        return bool(ups) and 100_000 < tusd.offset(ups[0]["ID"]) < 500_000

    await async_wait_until(partly, 20, "upload part-way")
    stop.set()
    await asyncio.sleep(0)  # let the workers see the stop
    await async_wait_until(lambda: _no_flight(slow), 10, "old sender stopped")
    row = queue.get(1)
    assert row is not None and row.upload_url
    fresh = make_rig(queue, outgoing, tusd.url, chunk=32 * 1024)
    running(fresh)
    await async_wait_until(lambda: _done(queue, 1), 30, "upload complete after restart")
    uploads = tusd.uploads()
    assert len(uploads) == 1, "a restart must resume, not start a second upload"
    assert tusd.data(uploads[0]["ID"]) == outgoing.read(obj)
    assert queue.get(1).upload_url == row.upload_url


async def _no_flight(rig) -> bool:
    return not rig.sender._in_flight


def test_metadata_is_base64_per_tus() -> None:
    from trailerlink_uplink.tus import encode_metadata

    header = encode_metadata({"a": "x y", "b": ""})
    assert header == f"a {base64.b64encode(b'x y').decode()},b "
