"""Waiting on conditions with deadlines (never on sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class ConditionTimeout(AssertionError):
    """A condition did not become true before its deadline."""


class GiveUp(Exception):
    """Raised by a condition when waiting longer cannot help (the process waited on has
    exited): the wait ends at once with this error instead of at its deadline."""


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns a truthy value; return that value.

    Exceptions raised by ``condition`` count as "not yet", except :class:`GiveUp`, which
    is raised at once. Raises
    :class:`ConditionTimeout` naming ``what`` (and the last error) at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except GiveUp:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise ConditionTimeout(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


async def async_wait_until(
    condition: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Async form of :func:`wait_until` for coroutine conditions."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = await condition()
            if value:
                return value
        except GiveUp:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise ConditionTimeout(f"timed out after {timeout}s waiting for {what}{detail}")
        await asyncio.sleep(interval)
