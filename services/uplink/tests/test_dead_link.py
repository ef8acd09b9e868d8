"""After a dead link: no pooled connection from before the failure is used again, and an
upload the ingest refuses for now (423/408) is set aside while the others go on.

Logic tests with fakes: an in-memory tus server (httpx.MockTransport) that keeps one
upload locked, and a transport factory whose pools can be told to fail. The real link
(a namespace whose interface goes down) is tests/e2e/test_silent_link_loss.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import httpx
import pytest
from prometheus_client import REGISTRY
from trailerlink_events.wire import decode_metadata
from trailerlink_testing.waiting import async_wait_until
from trailerlink_uplink.bandwidth import CapSchedule, TokenBucket
from trailerlink_uplink.link import UP, LinkMonitor
from trailerlink_uplink.queue import STATE_QUEUED, STATE_UPLOADED, SendQueue
from trailerlink_uplink.sender import Sender
from trailerlink_uplink.tus import TUS_VERSION, FreshAfterFailureTransport, TusClient

from .conftest import Outgoing


class _TusServer:
    """Enough tus for the sender: creation, HEAD, PATCH; one upload (``locked``) answers
    every PATCH with 423 as an ingest does while a dead connection holds its lock."""

    def __init__(self) -> None:
        self.uploads: dict[str, tuple[int, bytearray, str]] = {}
        self.locked_sop: str | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        base = {"Tus-Resumable": TUS_VERSION}
        if request.method == "OPTIONS":
            return httpx.Response(204, headers={**base, "Tus-Extension": "creation"})
        if request.method == "POST":
            upload_id = f"{len(self.uploads):032x}"
            sop = decode_metadata(request.headers["Upload-Metadata"])["sop_instance_uid"]
            self.uploads[upload_id] = (int(request.headers["Upload-Length"]), bytearray(), sop)
            return httpx.Response(201, headers={**base, "Location": f"/files/{upload_id}"})
        upload_id = request.url.path.rsplit("/", 1)[-1]
        length, data, sop = self.uploads[upload_id]
        if request.method == "HEAD":
            return httpx.Response(
                200, headers={**base, "Upload-Offset": str(len(data)), "Upload-Length": str(length)}
            )
        body = request.read()
        if sop == self.locked_sop:
            return httpx.Response(423, headers={**base, "Retry-After": "1"})
        data += body
        return httpx.Response(204, headers={**base, "Upload-Offset": str(len(data))})


async def test_a_locked_upload_is_set_aside_and_the_others_go_on(
    queue: SendQueue, outgoing: Outgoing, caplog: pytest.LogCaptureFixture
) -> None:
    server = _TusServer()
    stuck, *others = (outgoing.sealed(50_000) for _ in range(4))
    server.locked_sop = stuck.sop_instance_uid
    for obj in (stuck, *others):
        queue.enqueue(obj)
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    tus = TusClient("http://ingest.test/files/", http, TokenBucket(CapSchedule(0, [])))

    async def probe() -> None:
        await tus.discover()

    link = LinkMonitor(probe, probe_interval=0.2)
    sender = Sender(
        queue,
        tus,
        link,
        outgoing.root,
        trailer_id="trailer-test",
        chunk_size=16 * 1024,
        concurrency=1,
        backoff_initial=0.2,
        backoff_max=1.0,
    )
    refused_before = (
        REGISTRY.get_sample_value("trailerlink_uplink_http_refusals_total", {"status": "423"})
        or 0.0
    )
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="trailerlink_uplink.sender")
    task = asyncio.create_task(sender.run(stop))
    try:
        # One worker: the locked object comes first in queue order, yet the three others
        # are all uploaded while it keeps being refused.
        await async_wait_until(
            _now(lambda: queue.states() == {STATE_UPLOADED: 3, STATE_QUEUED: 1}),
            30,
            "the other objects uploaded past the locked one",
        )
        await async_wait_until(
            _now(lambda: _refused(refused_before) >= 2),
            10,
            "the locked upload tried again after its rest",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await http.aclose()
    assert link.state == UP  # the server answered: not a link problem
    lines = [r for r in caplog.records if r.getMessage().startswith("upload refused for now")]
    assert lines and lines[0].status == 423  # type: ignore[attr-defined]
    assert lines[0].upload_id == "0" * 32  # type: ignore[attr-defined]
    server.locked_sop = None  # the ingest lets go: the object goes too


def _now(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return check()

    return condition


def _refused(before: float) -> float:
    return (
        REGISTRY.get_sample_value("trailerlink_uplink_http_refusals_total", {"status": "423"})
        or 0.0
    ) - before


class _Pool(httpx.AsyncBaseTransport):
    """A stand-in connection pool: ``/fail`` fails like a dead link, ``/slow`` waits for
    ``gate``, anything else answers 204 naming the pool."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False
        self.gate = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            await self.gate.wait()
        if request.url.path == "/fail":
            raise httpx.ConnectError("link down")
        return httpx.Response(204, headers={"X-Pool": str(self.number)})

    async def aclose(self) -> None:
        self.closed = True


async def test_no_connection_from_before_a_failure_is_used_again() -> None:
    pools: list[_Pool] = []

    def factory() -> _Pool:
        pools.append(_Pool(len(pools)))
        return pools[-1]

    transport = FreshAfterFailureTransport(factory)
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get("http://ingest.test/a")).headers["X-Pool"] == "0"
        running = asyncio.create_task(http.get("http://ingest.test/slow"))
        await async_wait_until(
            _now(lambda: transport.in_flight(pools[0]) == 1),
            5,
            "a request running on the first pool",
        )
        with pytest.raises(httpx.ConnectError):
            await http.get("http://ingest.test/fail")
        assert transport.renewals == 1
        # Every later request goes to a new pool ...
        assert (await http.get("http://ingest.test/c")).headers["X-Pool"] == "1"
        # ... while the one still running on the old pool ends there, then it is closed.
        assert not pools[0].closed
        pools[0].gate.set()
        assert (await running).headers["X-Pool"] == "0"
        assert pools[0].closed
        assert not pools[1].closed
    assert pools[1].closed
