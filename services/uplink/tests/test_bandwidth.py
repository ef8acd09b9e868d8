"""The bandwidth cap: a token bucket following a clinic-hours schedule, measured on real
uploads to tusd."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from trailerlink_testing.tusd import Tusd
from trailerlink_testing.waiting import async_wait_until
from trailerlink_uplink import bandwidth
from trailerlink_uplink.bandwidth import CapSchedule, TokenBucket, parse_schedule
from trailerlink_uplink.queue import STATE_UPLOADED, SendQueue

from .conftest import Outgoing


def test_schedule_caps_clinic_hours_and_frees_the_night() -> None:
    windows = parse_schedule("08:00-18:00=250000, 18:00-08:00=0")
    at = lambda h, m=0: CapSchedule(1000, windows, clock=lambda: datetime(2026, 11, 27, h, m))  # noqa: E731
    assert at(9).rate_now() == 250_000
    assert at(17, 59).rate_now() == 250_000
    assert at(18).rate_now() == 0
    assert at(2).rate_now() == 0
    assert (
        CapSchedule(
            1000, parse_schedule("09:00-10:00=5"), clock=lambda: datetime(2026, 1, 1, 12)
        ).rate_now()
        == 1000
    )


@pytest.mark.parametrize("bad", ["08:00=5", "8-9=1", "08:00-09:00=-1", "08:00-09:00=x"])
def test_bad_schedule_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(bad)


async def test_token_bucket_paces_to_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a virtual clock (a loaded machine must not decide the outcome): the waits the
    bucket asks for add up to exactly bytes / rate, never less."""
    now = [1000.0]

    async def virtual_sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(bandwidth.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(bandwidth.asyncio, "sleep", virtual_sleep)
    bucket = TokenBucket(CapSchedule(400_000, []))
    started = now[0]
    for _ in range(50):
        await bucket.take(16 * 1024)
    expected = 50 * 16 * 1024 / 400_000
    assert now[0] - started == pytest.approx(expected)


async def test_uploads_respect_the_cap_within_5_percent(
    tusd: Tusd, queue: SendQueue, outgoing: Outgoing, make_rig, running
) -> None:
    rate = 500_000
    objs = [outgoing.sealed(600_000) for _ in range(3)]  # 1.8 MB: 3.6 s at the cap
    for obj in objs:
        queue.enqueue(obj)
    rig = make_rig(queue, outgoing, tusd.url, chunk=256 * 1024, concurrency=2, rate=rate)
    started = time.monotonic()
    running(rig)

    async def done() -> bool:
        return queue.states().get(STATE_UPLOADED, 0) == 3

    await async_wait_until(done, 30, "uploads complete", interval=0.02)
    elapsed = time.monotonic() - started
    achieved = sum(o.sealed_size for o in objs) / elapsed
    assert achieved <= rate * 1.05, f"{achieved:.0f} B/s over a cap of {rate}"
    assert achieved >= rate * 0.85, f"{achieved:.0f} B/s: the cap wastes the link"
