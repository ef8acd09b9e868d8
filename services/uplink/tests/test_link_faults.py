"""Link faults through a real TCP fault proxy between the uplink and tusd: cuts
mid-chunk, resets, stalls, a slow drip and a server that vanishes. Every object arrives
once and byte-identical, and a cut costs at most one chunk of re-sent bytes."""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import REGISTRY
from trailerlink_testing.faultproxy import FaultProxy
from trailerlink_testing.tusd import Tusd
from trailerlink_testing.waiting import async_wait_until
from trailerlink_uplink.link import DOWN, UP
from trailerlink_uplink.queue import STATE_UPLOADED, SendQueue
from trailerlink_uplink.tus import (
    RTO_CEILING_MS,
    TCP_RTO_MAX_MS,
    make_http_client,
    rto_ceiling_option,
)

from .conftest import Outgoing

CHUNK = 64 * 1024


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _uploaded(queue: SendQueue, n: int) -> bool:
    return queue.states().get(STATE_UPLOADED, 0) == n


def _assert_one_identical_upload(tusd: Tusd, outgoing: Outgoing, obj) -> None:
    uploads = tusd.uploads()
    assert len(uploads) == 1, f"expected one upload at the server, found {len(uploads)}"
    assert tusd.data(uploads[0]["ID"]) == outgoing.read(obj)


async def test_cut_mid_chunk_resumes_and_resends_at_most_one_chunk(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    obj = outgoing.sealed(600_000)
    queue.enqueue(obj)
    resent_before = _metric("trailerlink_uplink_resent_bytes_total")
    with FaultProxy(("127.0.0.1", tusd.port)) as proxy:
        proxy.cut_after(CHUNK * 2 + CHUNK // 2)  # in the middle of the third chunk
        rig = make_rig(queue, outgoing, f"http://127.0.0.1:{proxy.port}/files/", chunk=CHUNK)
        running(rig)
        await async_wait_until(lambda: _uploaded(queue, 1), 30, "upload complete after a cut")
        assert proxy.cuts == 1
    resent = _metric("trailerlink_uplink_resent_bytes_total") - resent_before
    assert resent <= CHUNK
    _assert_one_identical_upload(tusd, outgoing, obj)


async def test_repeated_resets_each_cost_at_most_one_chunk(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    obj = outgoing.sealed(900_000)
    queue.enqueue(obj)
    resent_before = _metric("trailerlink_uplink_resent_bytes_total")
    resets_before = _metric("trailerlink_uplink_link_errors_total", kind="reset")
    with FaultProxy(("127.0.0.1", tusd.port)) as proxy:
        rig = make_rig(
            queue, outgoing, f"http://127.0.0.1:{proxy.port}/files/", chunk=CHUNK, rate=400_000
        )
        running(rig)
        cuts = 0
        for threshold in (100_000, 350_000, 600_000):
            ups = tusd.uploads()

            async def past(threshold: int = threshold) -> bool:
                ups = tusd.uploads()
                return bool(ups) and tusd.offset(ups[0]["ID"]) >= threshold

            await async_wait_until(past, 20, f"server offset past {threshold}")
            proxy.cut()
            cuts += 1
        await async_wait_until(lambda: _uploaded(queue, 1), 30, "upload complete after resets")
        del ups
    resent = _metric("trailerlink_uplink_resent_bytes_total") - resent_before
    assert resent <= cuts * CHUNK
    assert _metric("trailerlink_uplink_link_errors_total", kind="reset") > resets_before
    _assert_one_identical_upload(tusd, outgoing, obj)


async def test_stalled_link_is_named_a_timeout_and_recovers(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    obj = outgoing.sealed(400_000)
    queue.enqueue(obj)
    timeouts_before = _metric("trailerlink_uplink_link_errors_total", kind="timeout")
    with FaultProxy(("127.0.0.1", tusd.port)) as proxy:
        rig = make_rig(
            queue,
            outgoing,
            f"http://127.0.0.1:{proxy.port}/files/",
            chunk=CHUNK,
            rate=200_000,
            io_timeout=1.0,
        )
        running(rig)

        async def started() -> bool:
            ups = tusd.uploads()
            return bool(ups) and tusd.offset(ups[0]["ID"]) > 50_000

        await async_wait_until(started, 20, "upload under way")
        proxy.stall()

        async def timed_out() -> bool:
            return _metric("trailerlink_uplink_link_errors_total", kind="timeout") > timeouts_before

        await async_wait_until(timed_out, 15, "the stall detected as a timeout")
        proxy.cut()  # the stalled connection dies as a real one would
        proxy.unstall()
        await async_wait_until(lambda: _uploaded(queue, 1), 30, "upload complete after a stall")
    _assert_one_identical_upload(tusd, outgoing, obj)


async def test_slow_drip_completes_without_restarting(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    obj = outgoing.sealed(150_000)
    queue.enqueue(obj)
    with FaultProxy(("127.0.0.1", tusd.port)) as proxy:
        proxy.drip(100_000)
        rig = make_rig(
            queue, outgoing, f"http://127.0.0.1:{proxy.port}/files/", chunk=CHUNK, io_timeout=5.0
        )
        running(rig)
        await async_wait_until(lambda: _uploaded(queue, 1), 30, "upload complete at a drip")
        assert proxy.cuts == 0
    _assert_one_identical_upload(tusd, outgoing, obj)


async def test_vanished_server_resumes_within_seconds_of_returning(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    obj = outgoing.sealed(500_000)
    queue.enqueue(obj)
    rig = make_rig(queue, outgoing, tusd.url, chunk=CHUNK, rate=200_000, backoff_max=30.0)
    running(rig)

    async def started() -> bool:
        ups = tusd.uploads()
        return bool(ups) and tusd.offset(ups[0]["ID"]) > 100_000

    await async_wait_until(started, 20, "upload under way")
    tusd.stop()

    async def link_down() -> bool:
        return rig.link.state == DOWN

    await async_wait_until(link_down, 15, "link seen down")
    tusd.start()
    back = time.monotonic()

    async def link_up() -> bool:
        return rig.link.state == UP

    await async_wait_until(link_up, 10, "link seen up again")
    # The probe (every 0.3 s here) revives the link long before the 30 s backoff ceiling.
    assert time.monotonic() - back < 5
    await async_wait_until(lambda: _uploaded(queue, 1), 30, "upload complete after the outage")
    _assert_one_identical_upload(tusd, outgoing, obj)


async def test_upload_connections_cap_tcp_retransmission_backoff(tusd: Tusd) -> None:
    """The connections carry the 1 s RTO ceiling where the kernel has it, so an upload
    stalled by an outage goes on within a second of the link's return."""
    option = rto_ceiling_option()
    if not option:
        pytest.skip("kernel without TCP_RTO_MAX_MS (Linux < 6.15)")
    http = make_http_client(verify=False, connect_timeout=2.0, io_timeout=5.0, max_connections=2)
    try:
        rsp = await http.request("OPTIONS", tusd.url)
        sock = rsp.extensions["network_stream"].get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS) == RTO_CEILING_MS == 1000
    finally:
        await http.aclose()
