"""sleep_or_stop: a periodic task's pause wakes at once on stop, else lasts its time."""

from __future__ import annotations

import asyncio

import pytest
from trailerlink_common.stopping import sleep_or_stop

LONG = 3600.0  # a pause no test may sit out
DEADLINE = 5.0  # far more than waking takes, far less than LONG


async def test_wakes_at_once_when_stop_is_set_mid_wait() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Runs once the helper has started waiting on the (unset) event.
    loop.call_soon(stop.set)
    started = loop.time()
    async with asyncio.timeout(DEADLINE):
        assert await sleep_or_stop(stop, LONG) is True
    assert loop.time() - started < DEADLINE


async def test_returns_false_when_the_time_passes_without_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await sleep_or_stop(stop, 0.05) is False
    assert loop.time() - started >= 0.04  # it did wait (the loop's clock is coarse)
    assert not stop.is_set()


async def test_returns_true_at_once_when_already_stopping() -> None:
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(DEADLINE):
        assert await sleep_or_stop(stop, LONG) is True


async def test_cancelling_the_caller_is_not_swallowed() -> None:
    # Only the pause's own timeout is absorbed; a cancel (the service's last resort
    # after its grace period) still reaches the task.
    stop = asyncio.Event()
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().call_soon(task.cancel)
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(DEADLINE):
            await sleep_or_stop(stop, LONG)
    task.uncancel()
