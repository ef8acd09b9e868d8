"""The per-trailer cap on unfinished uploads holds under concurrent creations: the count
and the creation happen under one lock on the shared storage, so no burst of POSTs (on
one replica or several) gets past it."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest
from trailerlink_ingest.uploads import UploadStore

pytestmark = pytest.mark.kafka

CAP = 64
CREATIONS = 70


async def _create_many(ingest, obj, count: int) -> list[int]:
    """``count`` POSTs at once, each on its own TLS connection."""
    context = ssl.create_default_context(cafile=ingest.pki.ca_file)
    context.load_cert_chain(*ingest.pki.cert("trailer-01"))
    headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": str(obj.meta.sealed_size),
        "Upload-Metadata": obj.meta.encode(),
    }
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(verify=context, limits=limits, timeout=60) as client:
        start = asyncio.Event()

        async def one() -> int:
            await start.wait()
            return (await client.post(ingest.url, headers=headers)).status_code

        tasks = [asyncio.ensure_future(one()) for _ in range(count)]
        await asyncio.sleep(0)  # every task waits on the start line
        start.set()
        return await asyncio.gather(*tasks)


def test_concurrent_creations_never_exceed_the_per_trailer_cap(own_ingest, objects) -> None:
    ingest = own_ingest(
        None,
        extra_env={
            "TRAILERLINK_MAX_CONCURRENT_UPLOADS": str(CAP),
            "TRAILERLINK_REQUEST_BURST": "1000",
        },
    )
    obj = objects()
    statuses = asyncio.run(_create_many(ingest, obj, CREATIONS))
    unfinished = [
        u for u in UploadStore(ingest.storage).trailer_uploads("trailer-01") if not u.complete
    ]
    assert len(unfinished) == CAP, f"{len(unfinished)} unfinished uploads against a cap of {CAP}"
    assert statuses.count(201) == CAP, sorted(statuses)
    assert set(statuses) == {201, 429}, sorted(statuses)
