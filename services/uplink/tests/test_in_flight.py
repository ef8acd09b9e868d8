"""Several uploads in flight (concurrency > 1, and the next object's upload created while
the last chunk of the current one goes): study order still holds, and a link cut still
costs at most one chunk per upload in flight. Against tusd, through the fault proxy."""

from __future__ import annotations

from prometheus_client import REGISTRY
from trailerlink_testing.faultproxy import FaultProxy
from trailerlink_testing.tusd import Tusd
from trailerlink_testing.waiting import async_wait_until
from trailerlink_uplink.queue import PRIORITY_URGENT, STATE_UPLOADED, SendQueue

from .conftest import Outgoing, synthetic_uid

CHUNK = 64 * 1024
CONCURRENCY = 3


async def _uploaded(queue: SendQueue, n: int) -> bool:
    return queue.states().get(STATE_UPLOADED, 0) == n


def _spy(rig, queue: SendQueue) -> tuple[list[str], list[int]]:
    """Record the order in which uploads are created (by SOP UID) and how many were
    created and not yet complete at each creation."""
    created: list[str] = []
    open_counts: list[int] = []
    create, mark_uploaded = rig.tus.create, queue.mark_uploaded
    done: set[str] = set()

    async def spy_create(
        length: int, metadata: dict[str, str], received_at: float | None = None
    ) -> str:
        created.append(metadata["sop_instance_uid"])
        open_counts.append(len(created) - len(done))
        return await create(length, metadata, received_at)

    def spy_mark(object_id: int) -> None:
        row = queue.get(object_id)
        if row is not None:
            done.add(row.sop_instance_uid)
        mark_uploaded(object_id)

    rig.tus.create = spy_create
    queue.mark_uploaded = spy_mark  # type: ignore[method-assign]
    return created, open_counts


async def test_study_order_holds_with_several_uploads_in_flight(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    older, newer, urgent = synthetic_uid(), synthetic_uid(), synthetic_uid()
    sizes = (150_000, 40_000, 220_000, 90_000)  # unequal, so uploads end at odd times
    studies = {
        older: [outgoing.sealed(s, older, received_at=100 + i) for i, s in enumerate(sizes)],
        newer: [outgoing.sealed(s, newer, received_at=200 + i) for i, s in enumerate(sizes)],
        urgent: [
            outgoing.sealed(s, urgent, priority=PRIORITY_URGENT, received_at=300 + i)
            for i, s in enumerate(sizes)
        ],
    }
    for objs in studies.values():
        for obj in objs:
            queue.enqueue(obj)
    rig = make_rig(queue, outgoing, tusd.url, chunk=CHUNK, concurrency=CONCURRENCY, rate=400_000)
    created, open_counts = _spy(rig, queue)
    running(rig)
    await async_wait_until(lambda: _uploaded(queue, 12), 60, "twelve uploads complete")

    assert max(open_counts) >= CONCURRENCY, "the test needs several uploads in flight"
    study_of = {o.sop_instance_uid: study for study, objs in studies.items() for o in objs}
    order = [study_of[sop] for sop in created]
    assert order == [urgent] * 4 + [older] * 4 + [newer] * 4, (
        "a later study's upload was created before every object of the earlier one"
    )
    uploads = tusd.uploads()
    assert len(uploads) == 12
    by_sop = {u["MetaData"]["sop_instance_uid"]: u for u in uploads}
    for objs in studies.values():
        for obj in objs:
            assert tusd.data(by_sop[obj.sop_instance_uid]["ID"]) == outgoing.read(obj)


async def test_cuts_with_several_in_flight_resend_at_most_one_chunk_per_upload(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    study = synthetic_uid()
    objs = [outgoing.sealed(500_000, study, received_at=100 + i) for i in range(4)]
    for obj in objs:
        queue.enqueue(obj)
    metric = "trailerlink_uplink_resent_bytes_total"
    resent_before = REGISTRY.get_sample_value(metric) or 0.0
    with FaultProxy(("127.0.0.1", tusd.port)) as proxy:
        rig = make_rig(
            queue,
            outgoing,
            f"http://127.0.0.1:{proxy.port}/files/",
            chunk=CHUNK,
            concurrency=CONCURRENCY,
            rate=600_000,
        )
        _, open_counts = _spy(rig, queue)
        running(rig)
        for threshold in (300_000, 800_000, 1_300_000):

            async def past(threshold: int = threshold) -> bool:
                return sum(tusd.offset(u["ID"]) for u in tusd.uploads()) >= threshold

            await async_wait_until(past, 30, f"{threshold} bytes at the server")
            proxy.cut()
        await async_wait_until(lambda: _uploaded(queue, 4), 60, "uploads complete after cuts")
        cuts = proxy.cuts
    assert cuts == 3
    assert max(open_counts) >= 2, "the test needs several uploads in flight"
    resent = (REGISTRY.get_sample_value(metric) or 0.0) - resent_before
    assert resent <= cuts * CONCURRENCY * CHUNK, f"{resent} bytes re-sent for {cuts} cuts"
    uploads = tusd.uploads()
    assert len(uploads) == 4, "a cut must resume uploads, not start new ones"
    by_sop = {u["MetaData"]["sop_instance_uid"]: u for u in uploads}
    for obj in objs:
        assert tusd.data(by_sop[obj.sop_instance_uid]["ID"]) == outgoing.read(obj)
