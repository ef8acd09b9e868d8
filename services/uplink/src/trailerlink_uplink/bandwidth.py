"""Bandwidth cap: a token bucket whose rate follows a time-of-day schedule.

The schedule keeps NBSS and VPN traffic headroom during clinic hours and lets the
backlog go uncapped overnight. Format (first matching window wins, local time)::

    "08:00-18:00=250000,18:00-08:00=0"      bytes/s; 0 = uncapped; windows may wrap midnight

Outside every window the default rate applies (``bandwidth_cap_bytes_per_second``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo

from trailerlink_uplink.control import OperatorControl

_PAUSE_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Window:
    start: dtime
    end: dtime
    rate: int

    def contains(self, now: dtime) -> bool:
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end  # wraps midnight


def _parse_time(text: str) -> dtime:
    hours, minutes = text.strip().split(":")
    if hours == "24" and minutes == "00":
        return dtime(23, 59, 59, 999999)
    return dtime(int(hours), int(minutes))


def parse_schedule(text: str) -> list[Window]:
    """Parse a schedule string; raises ``ValueError`` naming the bad entry."""
    windows = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        try:
            span, rate = entry.split("=")
            start, end = span.split("-")
            windows.append(Window(_parse_time(start), _parse_time(end), int(rate)))
        except ValueError:
            raise ValueError(f"bad bandwidth schedule entry {entry!r}") from None
        if windows[-1].rate < 0:
            raise ValueError(f"negative rate in bandwidth schedule entry {entry!r}")
    return windows


class CapSchedule:
    """The cap (bytes/s, 0 = uncapped) in force at a given moment."""

    def __init__(
        self,
        default_rate: int,
        windows: list[Window],
        timezone: str = "UTC",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.default_rate = default_rate
        self.windows = windows
        self._tz = ZoneInfo(timezone)
        self._clock = clock or (lambda: datetime.now(self._tz))

    def rate_now(self) -> int:
        now = self._clock().timetz().replace(tzinfo=None)
        for window in self.windows:
            if window.contains(now):
                return window.rate
        return self.default_rate


class TokenBucket:
    """Paces bytes to the schedule's rate, shared by every concurrent upload.

    :meth:`take` lets the bucket go into debt for a large piece and makes the caller
    wait the debt off, so the long-run rate is exact whatever the piece sizes; the burst
    (unused allowance carried forward) is capped at ``burst_seconds`` of the rate.
    """

    def __init__(
        self,
        schedule: CapSchedule,
        burst_seconds: float = 0.1,
        control: OperatorControl | None = None,
    ) -> None:
        self.schedule = schedule
        self.control = control
        self.burst_seconds = burst_seconds
        self._tokens = 0.0
        self._last = time.monotonic()
        self._rate = schedule.rate_now()
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> int:
        return self._rate

    def rate_now(self) -> int:
        """The cap in force now: the schedule's, lowered by an operator's cap."""
        scheduled = self.schedule.rate_now()
        return self.control.effective_rate(scheduled) if self.control else scheduled

    async def take(self, nbytes: int) -> None:
        """Return when ``nbytes`` may be sent under the cap."""
        async with self._lock:  # FIFO: concurrent uploads share the rate fairly
            # An operator's pause holds the lock, so every upload waits at its next piece.
            while self.control is not None and self.control.paused_now():
                await asyncio.sleep(_PAUSE_POLL_SECONDS)
                self._last = time.monotonic()
            rate = self.rate_now()
            now = time.monotonic()
            if rate != self._rate:
                self._rate, self._tokens = rate, 0.0
            self._last, elapsed = now, now - self._last
            if rate <= 0:
                return
            self._tokens = min(rate * self.burst_seconds, self._tokens + elapsed * rate)
            self._tokens -= nbytes
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / rate)
                self._tokens = 0.0
                self._last = time.monotonic()
