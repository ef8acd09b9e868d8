"""No object can block the queue: an upload the ingest refuses for good (here: sealed for
a key it no longer holds) fails alone — ObjectFailed with the reason, out of the send
queue, counted — and is never retried ahead of the next study, which goes at once.

The server is a small in-memory tus endpoint answering as the ingest does (its refusals
are problem+json with ``reason`` and ``permanent``; services/ingest/README.md): the
real ingest and the whole path are in tests/e2e/test_no_object_blocks_the_queue.py."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from prometheus_client import REGISTRY
from trailerlink_events.messages import FailureReason, ObjectFailed
from trailerlink_events.topics import OBJECT_FAILED
from trailerlink_events.wire import PROBLEM_CONTENT_TYPE, decode_metadata, refusal_problem
from trailerlink_testing.waiting import async_wait_until
from trailerlink_uplink.bandwidth import CapSchedule, TokenBucket
from trailerlink_uplink.link import LinkMonitor
from trailerlink_uplink.queue import SendQueue
from trailerlink_uplink.sender import REFUSED_STAGE, Sender
from trailerlink_uplink.tus import TusClient

from .conftest import Outgoing

RETIRED = "dc-00000000000000aa"
ENDPOINT = "https://ingest.test/files/"


class FakeIngest:
    """tus creation/HEAD/PATCH in memory; refuses creations sealed for RETIRED."""

    def __init__(self, permanent: bool = True) -> None:
        self.permanent = permanent
        self.uploads: dict[str, bytearray] = {}
        self.lengths: dict[str, int] = {}
        self.sop_of: dict[str, str] = {}
        self.creations: Counter[str] = Counter()

    def handle(self, request: httpx.Request) -> httpx.Response:
        tus = {"Tus-Resumable": "1.0.0"}
        if request.method == "OPTIONS":
            return httpx.Response(204, headers={**tus, "Tus-Extension": "creation"})
        if request.method == "POST":
            meta = decode_metadata(request.headers["Upload-Metadata"])
            self.creations[meta["sop_instance_uid"]] += 1
            if meta["key_id"] == RETIRED:
                body = refusal_problem(
                    400,
                    "sealing key not held",
                    "sealed for a key id this data centre does not hold",
                    "unknown_key",
                )
                body["permanent"] = self.permanent  # an older ingest did not say
                return httpx.Response(
                    400, json=body, headers={**tus, "Content-Type": PROBLEM_CONTENT_TYPE}
                )
            upload = uuid.uuid4().hex
            self.uploads[upload] = bytearray()
            self.lengths[upload] = int(request.headers["Upload-Length"])
            self.sop_of[upload] = meta["sop_instance_uid"]
            return httpx.Response(201, headers={**tus, "Location": f"/files/{upload}"})
        upload = request.url.path.rsplit("/", 1)[-1]
        if upload not in self.uploads:
            return httpx.Response(404, headers=tus)
        if request.method == "HEAD":
            return httpx.Response(
                200, headers={**tus, "Upload-Offset": str(len(self.uploads[upload]))}
            )
        if request.method == "PATCH":
            self.uploads[upload] += request.read()
            return httpx.Response(
                204, headers={**tus, "Upload-Offset": str(len(self.uploads[upload]))}
            )
        return httpx.Response(405, headers=tus)

    def complete(self) -> set[str]:
        return {self.sop_of[u] for u, data in self.uploads.items() if len(data) == self.lengths[u]}


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    async def publish(self, topic: str, key: str, event: object) -> None:
        self.events.append((topic, key, event))


def _refused(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("trailerlink_uplink_objects_refused_total", {"reason": reason})
        or 0.0
    )


@pytest.fixture
async def rig(queue: SendQueue, outgoing: Outgoing) -> AsyncIterator[object]:
    made: list[tuple[asyncio.Event, list[asyncio.Task[None]], httpx.AsyncClient]] = []

    def start(ingest: FakeIngest) -> tuple[Sender, Published]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(ingest.handle))
        tus = TusClient(ENDPOINT, http, TokenBucket(CapSchedule(0, [])))

        async def probe() -> None:
            await tus.discover()

        link = LinkMonitor(probe, probe_interval=0.1)
        sender = Sender(
            queue,
            tus,
            link,
            outgoing.root,
            trailer_id="trailer-test",
            chunk_size=64 * 1024,
            concurrency=1,
            backoff_initial=0.05,
            backoff_max=0.2,
        )
        published = Published()
        sender.publisher = published
        stop = asyncio.Event()
        tasks = [asyncio.create_task(sender.run(stop)), asyncio.create_task(link.run_probe(stop))]
        made.append((stop, tasks, http))
        return sender, published

    yield start
    for stop, tasks, http in made:
        stop.set()
        await asyncio.wait(tasks, timeout=15)
        await http.aclose()


async def test_an_object_sealed_for_a_retired_key_fails_alone_and_the_next_study_goes(
    queue: SendQueue, outgoing: Outgoing, rig: object
) -> None:
    # The resent study sits at the head of the queue (acquired first), the next woman's
    # images behind it: exactly the wedge support met.
    resent = [
        replace(
            outgoing.sealed(
                90_000, study_uid="1.2.826.0.1.3680043.10.1234.1", received_at=1_700_000_000.0
            ),
            key_id=RETIRED,
        )
        for _ in range(2)
    ]
    nxt = [
        outgoing.sealed(
            90_000, study_uid="1.2.826.0.1.3680043.10.1234.2", received_at=1_700_000_500.0
        )
        for _ in range(4)
    ]
    for obj in (*resent, *nxt):
        queue.enqueue(obj)
    before = _refused("unknown_key")
    ingest = FakeIngest()
    _, published = rig(ingest)  # type: ignore[operator]

    async def settled() -> bool:
        return queue.states() == {"failed": 2, "uploaded": 4}

    await async_wait_until(settled, 30, "the refused objects failed, the next study sent")
    assert ingest.complete() == {o.sop_instance_uid for o in nxt}
    # Each refused object was asked about once: never retried.
    assert all(ingest.creations[o.sop_instance_uid] == 1 for o in resent)
    failed = [e for topic, _, e in published.events if topic == OBJECT_FAILED]
    assert sorted(e.object.sop_instance_uid for e in failed) == sorted(
        o.sop_instance_uid for o in resent
    )
    for event in failed:
        assert isinstance(event, ObjectFailed)
        assert event.permanent and event.stage == REFUSED_STAGE
        assert event.reason_code == FailureReason.Value("FAILURE_REASON_UNSEALABLE")
        assert "unknown_key" in event.reason
    assert {k for topic, k, _ in published.events if topic == OBJECT_FAILED} == {
        resent[0].study_instance_uid
    }
    rows = queue.find_study(resent[0].study_instance_uid)
    assert all(r.failure and "unknown_key" in r.failure for r in rows)
    assert _refused("unknown_key") == before + 2
    assert queue.backlog().failed == 2


async def test_a_refusal_not_marked_permanent_sets_the_object_aside_behind_younger_work(
    queue: SendQueue, outgoing: Outgoing, rig: object
) -> None:
    """An ingest that does not say a refusal is permanent (an older version): the object
    rests and comes back, but never holds up the objects behind it."""
    stuck = replace(outgoing.sealed(50_000, received_at=1_700_000_000.0), key_id=RETIRED)
    nxt = [outgoing.sealed(50_000, received_at=1_700_000_100.0) for _ in range(3)]
    for obj in (stuck, *nxt):
        queue.enqueue(obj)
    ingest = FakeIngest(permanent=False)
    rig(ingest)  # type: ignore[operator]

    async def others_sent() -> bool:
        return ingest.complete() == {o.sop_instance_uid for o in nxt}

    await async_wait_until(others_sent, 30, "younger objects sent past the refused one")

    async def retried() -> bool:
        return ingest.creations[stuck.sop_instance_uid] >= 2

    await async_wait_until(retried, 30, "the refused object tried again later")
    assert queue.states() == {"queued": 1, "uploaded": 3}


async def test_a_refusal_met_while_creating_ahead_is_not_asked_again(
    queue: SendQueue, outgoing: Outgoing, rig: object
) -> None:
    """The next object's upload is created while the last chunk of the current one goes:
    a permanent refusal there fails the object without a second creation request."""
    first = outgoing.sealed(200_000, received_at=1_700_000_000.0)
    refused = replace(outgoing.sealed(50_000, received_at=1_700_000_100.0), key_id=RETIRED)
    last = outgoing.sealed(50_000, received_at=1_700_000_200.0)
    for obj in (first, refused, last):
        queue.enqueue(obj)
    ingest = FakeIngest()
    rig(ingest)  # type: ignore[operator]

    async def settled() -> bool:
        return queue.states() == {"failed": 1, "uploaded": 2}

    await async_wait_until(settled, 30, "one failed, the others sent")
    assert ingest.creations[refused.sop_instance_uid] == 1
    assert ingest.complete() == {first.sop_instance_uid, last.sop_instance_uid}
