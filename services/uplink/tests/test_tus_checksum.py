"""Per-chunk checksums (the tus checksum extension, which tusd lacks and the ingest
offers): each PATCH carries the chunk's SHA-256, and a 460 re-sends that same chunk.
The server here is a protocol double on httpx's MockTransport (pure protocol logic)."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import httpx
from trailerlink_events.wire import parse_upload_metadata
from trailerlink_uplink.link import LinkMonitor
from trailerlink_uplink.queue import STATE_UPLOADED, SendQueue
from trailerlink_uplink.sender import Sender
from trailerlink_uplink.tus import TusClient

from .conftest import Outgoing


class ChecksumServer:
    def __init__(self, corrupt_first_patch: bool) -> None:
        self.data = bytearray()
        self.length = 0
        self.patches: list[tuple[int, str]] = []
        self.corrupt_first = corrupt_first_patch
        self.metadata = ""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        tus = {"Tus-Resumable": "1.0.0"}
        if request.method == "OPTIONS":
            return httpx.Response(
                204,
                headers={
                    **tus,
                    "Tus-Extension": "creation,checksum",
                    "Tus-Checksum-Algorithm": "sha1,sha256",
                },
            )
        if request.method == "POST":
            self.length = int(request.headers["Upload-Length"])
            self.metadata = request.headers["Upload-Metadata"]
            return httpx.Response(201, headers={**tus, "Location": "/files/u1"})
        if request.method == "HEAD":
            return httpx.Response(200, headers={**tus, "Upload-Offset": str(len(self.data))})
        assert request.method == "PATCH"
        body = request.read()
        algo, digest = request.headers["Upload-Checksum"].split(" ")
        offset = int(request.headers["Upload-Offset"])
        self.patches.append((offset, algo))
        assert offset == len(self.data)
        if self.corrupt_first:
            self.corrupt_first = False
            body = body[:-1] + bytes([body[-1] ^ 1])  # damaged on the way
        if base64.b64decode(digest) != hashlib.sha256(body).digest():
            return httpx.Response(460, headers=tus)
        self.data += body
        return httpx.Response(204, headers={**tus, "Upload-Offset": str(len(self.data))})


async def test_each_chunk_carries_sha256_and_a_mismatch_resends_it(
    queue: SendQueue, outgoing: Outgoing
) -> None:
    obj = outgoing.sealed(200_000)
    queue.enqueue(obj)
    server = ChecksumServer(corrupt_first_patch=True)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as http:
        tus = TusClient("http://ingest.test/files/", http)

        async def probe() -> None:
            await tus.discover()

        link = LinkMonitor(probe, 0.1)
        sender = Sender(
            queue,
            tus,
            link,
            outgoing.root,
            trailer_id="t",
            chunk_size=64 * 1024,
            concurrency=1,
            backoff_initial=0.01,
            backoff_max=0.05,
        )
        row = queue.next_object()
        assert row is not None
        stop = asyncio.Event()
        assert await asyncio.wait_for(sender.send(row, stop), 10)
    assert bytes(server.data) == outgoing.read(obj)
    assert queue.states() == {STATE_UPLOADED: 1}
    assert all(algo == "sha256" for _, algo in server.patches)
    # 4 chunks, the first one twice (its checksum failed once).
    assert [off for off, _ in server.patches] == [0, 0, 65536, 131072, 196608]
    # Exactly the ingest's metadata keys.
    keys = {pair.split(" ")[0] for pair in server.metadata.split(",")}
    assert keys == {
        "sop_instance_uid",
        "study_instance_uid",
        "dataset_sha256",
        "sealed_size",
        "key_id",
        "series_instance_uid",
        "sop_class_uid",
        "transfer_syntax_uid",
        "file_sha256",
    }
    # ... and the ingest's strict reading of the contract accepts them.
    assert parse_upload_metadata(server.metadata).sealed_size == server.length
