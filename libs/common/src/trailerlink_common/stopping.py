"""Waiting between rounds of a periodic task without delaying shutdown.

Every long-running task gets the service's stop event (see :mod:`trailerlink_common.service`)
and must return soon after it is set: on SIGTERM the service waits only
``shutdown_grace_seconds`` for its tasks before cancelling them. A task that pauses with
``asyncio.sleep`` would finish its pause first, so a pause between retries or polls must
wake at once when the event is set. :func:`sleep_or_stop` is that pause.
"""

from __future__ import annotations

import asyncio
import contextlib


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile; True if stopping.

    Returns ``stop.is_set()`` at the end of the wait: True at once if ``stop`` was
    already set, True as soon as it is set during the wait, False when the time passed
    with ``stop`` unset. Typical use::

        while not stop.is_set():
            await poll_once()
            await sleep_or_stop(stop, interval)
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()
