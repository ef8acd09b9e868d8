"""A tus 1.0 client on httpx: creation, PATCH in chunks with a per-chunk checksum, HEAD
to learn the server's offset after any failure, termination.

It knows nothing of the queue: :class:`TusClient` speaks the protocol and raises
:class:`~trailerlink_uplink.link.LinkError` (transport or HTTP trouble, retry later) or
:class:`UploadGone` (the server forgot the upload: create a new one).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

# httpx imports its async transport (anyio's asyncio backend, httpcore, h11) lazily on
# the first request: ~0.5 s with the event loop blocked while the link sits idle.
# Importing them with the uplink moves that cost to start-up.
import anyio._backends._asyncio
import anyio.streams.tls  # noqa: F401
import h11  # noqa: F401
import httpcore._backends.anyio  # noqa: F401
import httpx
from trailerlink_common.received import RECEIVED_AT_HEADER, format_received_at
from trailerlink_common.tracing import current_traceparent
from trailerlink_events.wire import (
    PERMANENT_REFUSALS,
    PROBLEM_CONTENT_TYPE,
    REFUSAL_PROBLEM_PREFIX,
    encode_metadata,
)

from trailerlink_uplink.bandwidth import TokenBucket
from trailerlink_uplink.link import LinkError, classify, http_error

TUS_VERSION = "1.0.0"
PIECE_BYTES = 16 * 1024  # how finely a chunk is paced through the bandwidth cap
CHECKSUM_MISMATCH = 460
TCP_RTO_MAX_MS = 44  # linux/tcp.h (Linux >= 6.15); not yet a constant in the socket module
RTO_CEILING_MS = 1000


def rto_ceiling_option() -> list[tuple[int, int, int]]:
    """Socket option capping TCP's retransmission backoff at 1 s, where the kernel has it.

    During an outage the kernel backs a stalled connection's retransmissions off
    exponentially (0.2, 0.4, ... 120 s); when the link returns, the upload in flight sat
    idle until the next retransmission, often many seconds later. With the ceiling it
    resumes within a second. Older kernels refuse the option: then it is left out."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_TCP, TCP_RTO_MAX_MS, RTO_CEILING_MS)
        return [(socket.IPPROTO_TCP, TCP_RTO_MAX_MS, RTO_CEILING_MS)]
    return []


class UploadGone(Exception):
    """The server no longer has the upload (404/410, expired or terminated)."""


REFUSAL_REASONS = PERMANENT_REFUSALS
"""The permanent refusals the ingest names today (metric labels; others map to other)."""


class UploadRefused(Exception):
    """The ingest refused to create the upload for a reason that will not change
    (its problem+json says ``permanent``): sending the object again can never succeed.
    ``reason`` is the ingest's word for it; the message is its detail (no patient data)."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason if reason in REFUSAL_REASONS else "other"


def permanent_refusal(rsp: httpx.Response) -> UploadRefused | None:
    """The refusal in a creation's problem+json answer if the ingest marked it permanent;
    None for anything else (retried as before)."""
    if not rsp.headers.get("content-type", "").startswith(PROBLEM_CONTENT_TYPE):
        return None
    try:
        body = rsp.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("permanent") is not True:
        return None
    kind = str(body.get("type", ""))
    reason = str(body.get("reason") or kind.removeprefix(REFUSAL_PROBLEM_PREFIX))
    return UploadRefused(rsp.status_code, reason, str(body.get("detail", ""))[:200])


class OffsetConflict(Exception):
    """The server's offset is not the one the PATCH assumed (409): HEAD again."""


@dataclass
class ServerCapabilities:
    extensions: frozenset[str] = frozenset()
    checksum_algorithms: frozenset[str] = frozenset()
    max_size: int | None = None

    @property
    def sha256_checksums(self) -> bool:
        return "checksum" in self.extensions and "sha256" in self.checksum_algorithms


@dataclass
class PatchResult:
    offset: int
    sent: int
    """Bytes of the body handed to the connection (the server may have kept fewer)."""


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """TLS 1.3 client context that verifies the ingest and presents the trailer's
    certificate. Raises ``OSError``/``ssl.SSLError`` if a file cannot be loaded."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


def dead_link_socket_options(
    keepalive_seconds: int, user_timeout_seconds: int
) -> list[tuple[int, int, int]]:
    """TCP options by which the kernel gives up a connection whose path died silently (a
    4G bearer gone: no FIN, no RST) within seconds instead of minutes: data left
    unacknowledged for ``user_timeout_seconds`` ends it (TCP_USER_TIMEOUT), and an idle
    connection (waiting for an answer) is probed after ``keepalive_seconds``, then every
    ``keepalive_seconds``, three misses ending it. 0 leaves the option out."""
    options: list[tuple[int, int, int]] = []
    if keepalive_seconds > 0:
        options += [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive_seconds),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, keepalive_seconds),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
        ]
    if user_timeout_seconds > 0:
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_seconds * 1000))
    return options


class FreshAfterFailureTransport(httpx.AsyncBaseTransport):
    """httpx's transport, made new after any request fails at the transport level.

    A connection pooled before a link loss looks idle and healthy but is dead (the loss
    sent nothing); a trailer that moved has a new address and route. So once a request
    fails (timeout, reset, unreachable), later requests never reuse a pooled connection:
    they get a new pool and new connections. Requests still running on the old pool finish
    (or fail) there; the old pool is closed when the last of them ends."""

    def __init__(self, factory: Callable[[], httpx.AsyncBaseTransport]) -> None:
        self._factory = factory
        self._current = factory()
        self._users: dict[httpx.AsyncBaseTransport, int] = {self._current: 0}
        self.renewals = 0
        """How many times the pool was replaced (tests and logs)."""

    def in_flight(self, transport: httpx.AsyncBaseTransport) -> int:
        """Requests running on ``transport`` (one of the pools this made)."""
        return self._users.get(transport, 0)

    def _renew(self, failed: httpx.AsyncBaseTransport) -> None:
        if failed is self._current:
            self._current = self._factory()
            self._users[self._current] = 0
            self.renewals += 1

    async def _release(self, transport: httpx.AsyncBaseTransport) -> None:
        if transport not in self._users:  # the client was closed meanwhile
            return
        self._users[transport] -= 1
        if transport is not self._current and self._users[transport] == 0:
            del self._users[transport]
            with contextlib.suppress(Exception):
                await transport.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._current
        self._users[transport] += 1
        try:
            response = await transport.handle_async_request(request)
        except httpx.TransportError:
            self._renew(transport)
            await self._release(transport)
            raise
        except BaseException:
            await self._release(transport)
            raise
        stream = response.stream
        # An async transport answers with an async stream (httpx's client asserts the same).
        assert isinstance(stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_TrackedStream(stream, self, transport),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for transport in list(self._users):
            with contextlib.suppress(Exception):
                await transport.aclose()
        self._users.clear()


class _TrackedStream(httpx.AsyncByteStream):
    """A response body that tells its transport when it is done (and whether reading it
    failed: a dead link often shows while the answer is awaited)."""

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        owner: FreshAfterFailureTransport,
        transport: httpx.AsyncBaseTransport,
    ) -> None:
        self._inner = inner
        self._owner = owner
        self._transport = transport
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError:
            self._owner._renew(self._transport)
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._released:
                self._released = True
                await self._owner._release(self._transport)


def make_http_client(
    *,
    verify: ssl.SSLContext | bool,
    connect_timeout: float,
    io_timeout: float,
    max_connections: int,
    keepalive_seconds: int = 5,
    user_timeout_seconds: int = 15,
) -> httpx.AsyncClient:
    """The HTTP client uploads share. Connections are never reused across a failure
    (:class:`FreshAfterFailureTransport`) and carry the dead-link socket options
    (:func:`dead_link_socket_options`) and the RTO ceiling; idle ones are kept 15 s at
    most. ``max_connections`` should allow two per upload worker (a PATCH and the next
    object's create) plus the receipts poll and the probe."""

    def pool() -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(
            verify=verify,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=15.0,
            ),
            socket_options=[
                *rto_ceiling_option(),
                *dead_link_socket_options(keepalive_seconds, user_timeout_seconds),
            ],
        )

    return httpx.AsyncClient(
        transport=FreshAfterFailureTransport(pool),
        timeout=httpx.Timeout(
            connect=connect_timeout, read=io_timeout, write=io_timeout, pool=io_timeout
        ),
        headers={"Tus-Resumable": TUS_VERSION, "User-Agent": "trailerlink-uplink"},
        follow_redirects=False,
    )


@dataclass
class TusClient:
    """tus requests against one creation endpoint."""

    endpoint: str
    http: httpx.AsyncClient
    bucket: TokenBucket | None = None
    on_sent: Callable[[int], None] = field(default=lambda n: None)
    capabilities: ServerCapabilities | None = None

    async def _request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        if traceparent := current_traceparent():
            # The ingest keeps the creation's traceparent with the upload: its processing
            # and PACS spans continue the image's trace (a header an older ingest ignores,
            # where an unknown Upload-Metadata key would be refused).
            kwargs["headers"] = {
                **(kwargs.get("headers") or {}),  # type: ignore[dict-item]
                "traceparent": traceparent,
            }
        try:
            return await self.http.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise classify(exc) from None
        except OSError as exc:
            raise classify(exc) from None

    async def discover(self) -> ServerCapabilities:
        """OPTIONS: what the server supports. Also the reachability probe."""
        rsp = await self._request("OPTIONS", self.endpoint)
        if rsp.status_code >= 500:
            raise http_error(rsp.status_code, rsp.headers.get("Retry-After"))
        if rsp.status_code not in (200, 204):
            raise http_error(rsp.status_code, rsp.headers.get("Retry-After"))
        split = lambda name: frozenset(  # noqa: E731
            v.strip().lower() for v in rsp.headers.get(name, "").split(",") if v.strip()
        )
        max_size = rsp.headers.get("Tus-Max-Size")
        self.capabilities = ServerCapabilities(
            split("Tus-Extension"),
            split("Tus-Checksum-Algorithm"),
            int(max_size) if max_size and max_size.isdigit() else None,
        )
        return self.capabilities

    async def create(
        self, length: int, metadata: Mapping[str, str], received_at: float | None = None
    ) -> str:
        """POST: a new empty upload of ``length`` bytes; returns its absolute URL.
        ``received_at``: when the gateway received the object (unix seconds), stated in
        a header so the data centre's audit trail starts there.
        Raises UploadRefused when the ingest says it can never accept this object."""
        headers = {
            "Upload-Length": str(length),
            "Upload-Metadata": encode_metadata(metadata),
            "Content-Length": "0",
        }
        if received_at:
            headers[RECEIVED_AT_HEADER] = format_received_at(received_at)
        rsp = await self._request("POST", self.endpoint, headers=headers)
        if rsp.status_code != 201 or "Location" not in rsp.headers:
            if 400 <= rsp.status_code < 500 and (refused := permanent_refusal(rsp)):
                raise refused
            raise http_error(rsp.status_code, rsp.headers.get("Retry-After"))
        return urljoin(self.endpoint, rsp.headers["Location"])

    async def offset(self, url: str) -> int:
        """HEAD: how many bytes the server has. Raises UploadGone if it has none."""
        rsp = await self._request("HEAD", url, headers={"Cache-Control": "no-store"})
        if rsp.status_code in (403, 404, 410):
            raise UploadGone(f"HTTP {rsp.status_code}")
        if rsp.status_code not in (200, 204) or "Upload-Offset" not in rsp.headers:
            raise http_error(rsp.status_code, rsp.headers.get("Retry-After"))
        return int(rsp.headers["Upload-Offset"])

    async def patch(self, url: str, offset: int, data: bytes) -> PatchResult:
        """PATCH ``data`` at ``offset``, paced by the bandwidth cap; returns the new offset.

        Raises LinkError (the caller HEADs and resumes), OffsetConflict or UploadGone.
        A checksum the server rejects (460) raises LinkError("checksum") after which the
        same chunk is simply sent again."""
        headers = {
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(len(data)),
        }
        caps = self.capabilities
        if caps is not None and caps.sha256_checksums:
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            headers["Upload-Checksum"] = f"sha256 {digest}"
        sent = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            view = memoryview(data)
            for start in range(0, len(data), PIECE_BYTES):
                piece = view[start : start + PIECE_BYTES]
                if self.bucket is not None:
                    await self.bucket.take(len(piece))
                sent += len(piece)
                self.on_sent(len(piece))
                yield bytes(piece)

        try:
            rsp = await self._request("PATCH", url, headers=headers, content=body())
        except LinkError as exc:
            exc.sent = sent  # type: ignore[attr-defined]
            raise
        if rsp.status_code == 204 and "Upload-Offset" in rsp.headers:
            return PatchResult(int(rsp.headers["Upload-Offset"]), sent)
        if rsp.status_code == 409:
            raise OffsetConflict()
        if rsp.status_code in (403, 404, 410):
            raise UploadGone(f"HTTP {rsp.status_code}")
        if rsp.status_code == CHECKSUM_MISMATCH:
            error = LinkError("checksum", "server rejected the chunk checksum")
            error.sent = sent  # type: ignore[attr-defined]
            raise error
        error = http_error(rsp.status_code, rsp.headers.get("Retry-After"))
        error.sent = sent  # type: ignore[attr-defined]
        raise error

    async def terminate(self, url: str) -> None:
        """DELETE an upload (termination extension); a missing upload is fine."""
        rsp = await self._request("DELETE", url)
        if rsp.status_code not in (204, 404, 410):
            raise http_error(rsp.status_code, rsp.headers.get("Retry-After"))
