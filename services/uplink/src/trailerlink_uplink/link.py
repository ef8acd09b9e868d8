"""Link handling: name every failure, back off with jitter, probe until the link returns.

A transport failure (DNS, TLS, refused, timeout, reset) marks the link *down*; every
upload then waits, and a cheap probe (an OPTIONS request to the tus endpoint) runs every
``probe_interval_seconds``. When it answers, the link is *up* again and the waiting
uploads resume at once, so sending restarts within seconds of the link returning, from
whatever address the trailer now has (connections and DNS are fresh per attempt).
A server that answers with an error (5xx, unexpected 4xx) marks the link *degraded*:
uploads back off exponentially with full jitter up to ``backoff_max_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable

import httpx
from trailerlink_common.stopping import sleep_or_stop

from trailerlink_uplink import metrics

log = logging.getLogger(__name__)

UP, DEGRADED, DOWN = "up", "degraded", "down"
TRANSPORT_KINDS = frozenset({"dns", "tls", "connect", "timeout", "reset"})


class LinkError(Exception):
    """A request failed; ``kind`` names how (dns, tls, connect, timeout, reset, http_5xx,
    http_4xx). The message never carries patient data."""

    def __init__(
        self,
        kind: str,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.status = status
        """The HTTP status when the server answered (None: the request never got one)."""
        self.retry_after = retry_after

    @property
    def is_transport(self) -> bool:
        return self.kind in TRANSPORT_KINDS


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> LinkError:
    """Name a failed request's cause."""
    if isinstance(exc, LinkError):
        return exc
    chain = _causes(exc)
    if any(isinstance(c, socket.gaierror) for c in chain) or any(
        "name resolution" in str(c).lower() or "name or service not known" in str(c).lower()
        for c in chain
    ):
        return LinkError("dns", type(exc).__name__)
    if any(isinstance(c, ssl.SSLError | ssl.CertificateError) for c in chain):
        return LinkError("tls", type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return LinkError("timeout", type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        return LinkError("connect", type(exc).__name__)
    if isinstance(exc, httpx.TransportError | ConnectionError | OSError):
        return LinkError("reset", type(exc).__name__)
    return LinkError("reset", type(exc).__name__)


def http_error(status: int, retry_after: str | None = None) -> LinkError:
    """The LinkError for an unexpected HTTP answer, with its status (and Retry-After in
    seconds, when the server gave one as a number)."""
    seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
    return LinkError(
        "http_5xx" if status >= 500 else "http_4xx",
        f"HTTP {status}",
        status=status,
        retry_after=seconds,
    )


class Backoff:
    """Exponential backoff with full jitter and a ceiling."""

    def __init__(self, initial: float, ceiling: float) -> None:
        self.initial = initial
        self.ceiling = ceiling
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        top = min(self.ceiling, self.initial * 2 ** (self.failures - 1))
        return random.uniform(top / 2, top)

    def reset(self) -> None:
        self.failures = 0


class LinkMonitor:
    """The shared view of the link. Uploads report outcomes; a probe revives it."""

    def __init__(self, probe: Callable[[], Awaitable[None]], probe_interval: float) -> None:
        self._probe = probe
        self.probe_interval = probe_interval
        self.state = UP
        self._up = asyncio.Event()
        self._up.set()
        self._changed = asyncio.Event()
        self._publish()

    def _publish(self) -> None:
        for state in (UP, DEGRADED, DOWN):
            metrics.LINK_STATE.labels(state).set(1 if state == self.state else 0)
        metrics.LINK_UP.set(1 if self.state == UP else 0)

    def _set(self, state: str) -> None:
        if state != self.state:
            log.info("link state changed", extra={"from": self.state, "to": state})
            self.state = state
            self._publish()
            self._changed.set()
            self._changed = asyncio.Event()
        if state == UP:
            self._up.set()
        else:
            self._up.clear()

    def report_success(self) -> None:
        self._set(UP)

    def report_failure(self, error: LinkError) -> None:
        metrics.LINK_ERRORS.labels(error.kind).inc()
        self._set(DOWN if error.is_transport else DEGRADED)

    async def wait_after_failure(self, delay: float, stop: asyncio.Event) -> None:
        """Wait ``delay`` seconds, or less if the link comes back up, or until stop."""
        waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
        if self.state == DOWN:
            waiters.append(asyncio.ensure_future(self._up_again()))
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _up_again(self) -> None:
        await self._up.wait()

    async def run_probe(self, stop: asyncio.Event) -> None:
        """Service task: while the link is down, probe it every ``probe_interval``."""
        while not stop.is_set():
            if self.state != DOWN:
                changed = self._changed
                waiters = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(changed.wait()),
                ]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                continue
            jittered = self.probe_interval * random.uniform(0.8, 1.2)
            if await sleep_or_stop(stop, jittered):
                return
            try:
                await self._probe()
            except Exception as exc:
                error = classify(exc)
                metrics.LINK_ERRORS.labels(error.kind).inc()
                log.info("link probe failed", extra={"kind": error.kind})
                continue
            self._set(UP)
