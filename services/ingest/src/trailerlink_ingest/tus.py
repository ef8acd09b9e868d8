"""tus 1.0.0 over HTTPS: core, creation, creation-with-upload, checksum, termination and
expiration (:class:`TusRoutes`), and who is calling (:class:`Callers`). The protocol
edge only: state lives in :mod:`uploads`, certificates and the access list in
:mod:`identity`, outcomes in :mod:`ledger`; what a trailer reads back beside its uploads
in :mod:`trailer_api`, the application wired in :mod:`https_app`.

Status codes (tus 1.0.0): 201 created, 204 PATCH/DELETE/OPTIONS, 200 HEAD; 400 bad
header or metadata, 401 no client certificate, 403 trailer refused, 404 no such upload
(of this trailer), 409 ``Upload-Offset`` conflict (or terminating a completed upload),
408 the body stopped arriving (no bytes for the body deadline), 410 expired, 412 wrong
``Tus-Resumable``, 413 too large, 415 wrong ``Content-Type``, 423 the upload is being
written by another request that is still receiving bytes, 429 limit, 460 checksum
mismatch, 503 the trailer's creation lock not had within 10 s (retry).

No dead client keeps an upload: a body that brings no bytes for ``body_idle_seconds``
ends its request (the durable offset stands, the lock goes), and a resumed request that
finds the upload locked takes it over from a writer whose client has been quiet for
``TAKEOVER_IDLE_SECONDS`` (see :mod:`uploads`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from trailerlink_common.received import RECEIVED_AT_HEADER, parse_received_at
from trailerlink_common.tracing import valid_traceparent
from trailerlink_events.wire import (
    CREATE_REFUSALS,
    PROBLEM_CONTENT_TYPE,
    refusal_problem,
)

from trailerlink_ingest import metrics
from trailerlink_ingest.completion import Announcer
from trailerlink_ingest.identity import Authenticator, Refused, parse_client_cert_header
from trailerlink_ingest.ledger import LedgerUnavailable
from trailerlink_ingest.metadata import MetadataError, parse_upload_metadata
from trailerlink_ingest.uploads import (
    UploadInfo,
    UploadLocked,
    UploadStore,
    UploadVanished,
    is_storage_full,
    valid_upload_id,
)

log = logging.getLogger(__name__)
audit = logging.getLogger("trailerlink_ingest.audit")

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
CHECKSUM_MISMATCH = 460
WRITE_BUFFER = 256 * 1024
MAX_RECEIPTS_PAGE = 1000
TAKEOVER_IDLE_SECONDS = 2.0  # a writer quiet this long yields to a resumed request
BODY_POLL_SECONDS = 0.5  # how often a request's watchdog looks at its deadline and takeovers


class TusError(Exception):
    """An answer other than success. With ``title`` the body is an RFC 9457 problem
    (``application/problem+json``) whose detail is ``message``; else plain text."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        title: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.title = title
        self.reason = reason
        """An upload creation refusal's reason (:data:`CREATE_REFUSALS`); None elsewhere."""


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class TusConfig:
    base_path: str = "/files/"
    max_size: int = 2 * 1024**3
    max_concurrent_uploads: int = 64
    requests_per_second: float = 50.0
    burst: int = 200
    expiry_seconds: float = 24 * 3600
    identity_source: str = "tls"
    trusted_proxies: list[Any] = field(default_factory=list)
    client_cert_header: str = "client-cert"
    key_ids: Container[str] | None = None  # a KeyStore: re-read after a rotation
    body_idle_seconds: float = 20.0


def _creation_refusal_reason(status: int) -> str:
    """The reason of a refused creation that did not name one (checks shared with the
    other routes: identity, rate limit, protocol version, the creation lock)."""
    return {
        401: "no_certificate",
        403: "trailer_refused",
        429: "rate_limited",
        503: "busy",
        412: "bad_protocol",
    }.get(status, "other")


def _expires(info: UploadInfo, cfg: TusConfig) -> dict[str, str]:
    if info.complete:
        return {}
    return {"Upload-Expires": formatdate(info.expires_at(cfg.expiry_seconds), usegmt=True)}


def _int_header(value: str | None, name: str) -> int:
    if value is None:
        raise TusError(400, f"{name} is required")
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise TusError(400, f"{name} must be a non-negative decimal integer")
    return int(value)


def _parse_checksum(value: str | None) -> tuple[str, bytes] | None:
    if value is None:
        return None
    parts = value.strip().split(" ")
    if len(parts) != 2:
        raise TusError(400, "Upload-Checksum must be '<algorithm> <base64>'")
    algorithm, encoded = parts
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise TusError(
            400, f"checksum algorithm not supported; use one of {','.join(CHECKSUM_ALGORITHMS)}"
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise TusError(400, "Upload-Checksum value is not base64") from None
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise TusError(400, "Upload-Checksum has the wrong length for its algorithm")
    return algorithm, digest


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _BodyEnded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BodyReader:
    """The request body chunk by chunk, ending it (``_BodyEnded``) when the client
    disconnects, when no byte came for ``idle_seconds`` (a link that died without FIN or
    RST looks exactly like this), or when a resumed request asks for the upload and this
    client has been quiet for ``TAKEOVER_IDLE_SECONDS``. uvicorn has no body-read
    timeout of its own, so without this a half-open connection holds its upload's lock
    for as long as the socket lives.

    Reading a chunk costs nothing extra (this is the upload hot path): a watchdog task per
    request looks every ``BODY_POLL_SECONDS`` and, only while the handler is waiting for
    body bytes, cancels it there; the cancellation becomes ``_BodyEnded``. Must be made
    and used inside the request's own task."""

    def __init__(
        self,
        request: Request,
        idle_seconds: float,
        takeover_requested: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._stream = request.stream().__aiter__()
        self._idle = idle_seconds
        self._takeover_requested = takeover_requested
        self._last_byte = time.monotonic()
        self._waiting_for_bytes = False
        self._ended: str | None = None
        self._handler = asyncio.current_task()
        self._watchdog = asyncio.ensure_future(self._watch())

    async def next_chunk(self) -> bytes | None:
        """The next non-empty chunk; None at the end of the body."""
        while True:
            self._waiting_for_bytes = True
            try:
                chunk = await anext(self._stream)
            except StopAsyncIteration:
                return None
            except ClientDisconnect:
                raise _BodyEnded("disconnect") from None
            except asyncio.CancelledError:
                # Ours (the watchdog's) unless someone else cancelled the request too.
                if (
                    self._ended is not None
                    and self._handler is not None
                    and self._handler.uncancel() == 0
                ):
                    raise _BodyEnded(self._ended) from None
                raise
            finally:
                self._waiting_for_bytes = False
            if chunk:
                self._last_byte = time.monotonic()
                return chunk

    async def _watch(self) -> None:
        takeover_after = min(TAKEOVER_IDLE_SECONDS, self._idle)
        while True:
            await asyncio.sleep(BODY_POLL_SECONDS)
            if not self._waiting_for_bytes:
                continue
            quiet = time.monotonic() - self._last_byte
            reason = None
            if quiet >= self._idle:
                reason = "idle"
            elif (
                quiet >= takeover_after
                and self._takeover_requested is not None
                and await self._takeover_requested()
            ):
                reason = "takeover"
            # Still waiting for bytes (not, say, in a disk write) after the await above?
            if reason is not None and self._waiting_for_bytes and self._handler is not None:
                self._ended = reason
                self._handler.cancel()
                return

    def close(self) -> None:
        self._watchdog.cancel()


async def _small_body(request: Request, limit: int, idle_seconds: float) -> bytes:
    """A whole small request body: 413 past ``limit`` bytes (declared or sent, chunked
    or not), 408 when it stalls for ``idle_seconds``, 400 when the client goes away."""
    declared = request.headers.get("content-length")
    if declared is not None and _int_header(declared, "Content-Length") > limit:
        raise TusError(413, "request body too large")
    reader = _BodyReader(request, idle_seconds)
    body = bytearray()
    try:
        while (chunk := await reader.next_chunk()) is not None:
            body += chunk
            if len(body) > limit:
                raise TusError(413, "request body too large", {"Connection": "close"})
    except _BodyEnded as ended:
        raise TusError(
            408 if ended.reason == "idle" else 400,
            f"request body ended early ({ended.reason})",
            {"Connection": "close"},
        ) from None
    finally:
        reader.close()
    return bytes(body)


def _base_headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **(extra or {})}


def _check_resumable(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise TusError(412, "Tus-Resumable 1.0.0 is required", {"Tus-Version": TUS_VERSION})


def error_response(exc: TusError) -> Response:
    """The answer for a refusal: an RFC 9457 problem where the error has a title (a
    refused creation also names its reason and whether it can ever succeed, so the
    uplink need not guess from the status), else plain text; counted by status."""
    metrics.REQUESTS_REFUSED.labels(str(exc.status)).inc()
    headers = _base_headers(exc.headers)
    if exc.reason is not None:
        problem = refusal_problem(
            exc.status, exc.title or "upload refused", exc.message, exc.reason
        )
        return JSONResponse(
            problem, status_code=exc.status, headers=headers, media_type=PROBLEM_CONTENT_TYPE
        )
    if exc.title is not None:
        problem = {
            "type": "about:blank",
            "title": exc.title,
            "status": exc.status,
            "detail": exc.message,
        }
        return JSONResponse(
            problem, status_code=exc.status, headers=headers, media_type="application/problem+json"
        )
    return Response(
        exc.message + "\n", status_code=exc.status, headers=headers, media_type="text/plain"
    )


def tus_handler(fn: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """A route whose TusError (or an unreachable ledger) becomes its answer."""

    @functools.wraps(fn)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:  # (self,) request, ...
        try:
            return await fn(*args, **kwargs)
        except TusError as exc:
            return error_response(exc)
        except LedgerUnavailable:
            return error_response(TusError(503, "ledger not reachable", {"Retry-After": "5"}))
        except OSError as exc:
            if not is_storage_full(exc):
                raise
            # The bytes of this request that did not fit were never committed: the
            # upload's durable offset stands and the client resumes from it later.
            metrics.STORAGE_FULL.inc()
            log.error("uploads volume full; request refused 507", extra={"error": str(exc)})
            return error_response(
                TusError(
                    507,
                    "the data centre's upload storage is full; nothing of this request "
                    "was kept, retry later",
                    {"Retry-After": "60", "Connection": "close"},
                    title="Insufficient Storage",
                )
            )

    return wrapped


class Callers:
    """Who is calling: the trailer a request's certificate (in the TLS session or the
    trusted proxy's header) names, admitted by the access list and rate limited per
    trailer; and, before an upload completes, whether it is still admitted."""

    def __init__(self, auth: Authenticator, cfg: TusConfig) -> None:
        self.auth = auth
        self.cfg = cfg
        self.buckets: dict[str, TokenBucket] = {}

    def credentials(self, request: Request) -> tuple[bytes | None, str]:
        """The caller's client certificate (DER; None when there is none) and address."""
        peer = request.client.host if request.client else ""
        if self.cfg.identity_source == "proxy-header":
            import ipaddress

            try:
                address = ipaddress.ip_address(peer)
            except ValueError:
                address = None
            if address is None or not any(address in net for net in self.cfg.trusted_proxies):
                metrics.AUTH_REFUSALS.labels("untrusted_proxy").inc()
                log.warning("Client-Cert from an untrusted peer refused", extra={"peer": peer})
                raise TusError(403, "not a trusted proxy")
            header = request.headers.get(self.cfg.client_cert_header)
            try:
                der = parse_client_cert_header(header) if header else None
            except Refused as refused:
                raise TusError(401, str(refused)) from None
        else:
            tls = (request.scope.get("extensions") or {}).get("tls") or {}
            der = tls.get("client_cert_der")
        return der, peer

    def trailer_of(self, request: Request) -> str:
        der, peer = self.credentials(request)
        if not der:
            try:
                self.auth.admit(None, peer)
            except Refused:
                pass
            raise TusError(401, "a client certificate is required")
        try:
            trailer = self.auth.admit(der, peer)
        except Refused as refused:
            raise TusError(403, f"trailer refused: {refused.reason}") from None
        bucket = self.buckets.setdefault(
            trailer,
            TokenBucket(self.cfg.requests_per_second, self.cfg.burst, tokens=self.cfg.burst),
        )
        if not bucket.take():
            raise TusError(429, "request rate limit", {"Retry-After": "1"})
        return trailer

    async def still_admitted(self, request: Request, info: UploadInfo) -> None:
        """Refuse (403, audited, counted) to complete an upload for a trailer that is no
        longer admitted. The request was admitted when it began; a revocation that
        arrived while its body was on the way must still stop the object reaching PACS.
        The access list is re-read first, not taken from up to ACCESS_RELOAD_SECONDS ago."""
        der, peer = self.credentials(request)

        def admit_again() -> str:
            self.auth.access.reload()
            return self.auth.admit(der, peer)

        try:
            again = await asyncio.to_thread(admit_again)
            if again != info.trailer_id:  # the same certificate: cannot differ, but be sure
                raise Refused("other_trailer")
        except Refused as refused:
            metrics.COMPLETIONS_REFUSED.labels(refused.reason).inc()
            audit.warning(
                "upload completion refused: trailer no longer admitted",
                extra={
                    "trailer": info.trailer_id,
                    "upload_id": info.upload_id,
                    "reason": refused.reason,
                },
            )
            raise TusError(
                403,
                f"trailer refused: {refused.reason}; the upload was not completed",
                title="trailer no longer admitted",
            ) from None


class TusRoutes:
    """The tus 1.0.0 routes under ``cfg.base_path``: OPTIONS, creation (with upload),
    HEAD, PATCH and DELETE of a trailer's own uploads."""

    def __init__(
        self, callers: Callers, store: UploadStore, announcer: Announcer, cfg: TusConfig
    ) -> None:
        self.callers = callers
        self.store = store
        self.announcer = announcer
        self.cfg = cfg
        self.base = "/" + cfg.base_path.strip("/")

    def mount(self, app: FastAPI) -> None:
        base = self.base
        for path in (base + "/", base, base + "/{upload_id}"):
            app.add_api_route(path, self.options, methods=["OPTIONS"], include_in_schema=False)
        for path in (base + "/", base):
            app.add_api_route(path, self.create, methods=["POST"], include_in_schema=False)
        item = base + "/{upload_id}"
        app.add_api_route(item, self.head, methods=["HEAD"], include_in_schema=False)
        app.add_api_route(item, self.patch, methods=["PATCH"], include_in_schema=False)
        app.add_api_route(item, self.delete, methods=["DELETE"], include_in_schema=False)

    async def own_upload(self, trailer: str, upload_id: str) -> UploadInfo:
        if not valid_upload_id(upload_id):
            raise TusError(404, "no such upload")
        info = await asyncio.to_thread(self.store.load, trailer, upload_id)
        if info is None:
            raise TusError(404, "no such upload")
        if info.expired(self.cfg.expiry_seconds):
            raise TusError(410, "upload expired")
        return info

    async def receive(self, request: Request, info: UploadInfo, offset: int) -> UploadInfo:
        """Append the request body at ``offset``; durable when this returns."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != OFFSET_CONTENT_TYPE:
            raise TusError(415, f"Content-Type must be {OFFSET_CONTENT_TYPE}")
        checksum = _parse_checksum(request.headers.get("upload-checksum"))
        declared = request.headers.get("content-length")
        declared_length = _int_header(declared, "Content-Length") if declared else None
        try:
            async with self.store.locked(info.trailer_id, info.upload_id):
                current = await asyncio.to_thread(self.store.load, info.trailer_id, info.upload_id)
                if current is None:
                    raise TusError(404, "no such upload")
                if current.offset != offset:
                    raise TusError(
                        409,
                        "Upload-Offset does not match the upload's offset",
                        {"Upload-Offset": str(current.offset)},
                    )
                if declared_length is not None and offset + declared_length > current.length:
                    raise TusError(413, "body would exceed Upload-Length")
                return await self._append(request, current, checksum)
        except UploadLocked:
            log.warning(
                "upload locked by a request still receiving bytes; refused",
                extra={"trailer": info.trailer_id, "upload_id": info.upload_id},
            )
            raise TusError(
                423, "upload is being written by another request", {"Retry-After": "1"}
            ) from None
        except UploadVanished:
            raise TusError(404, "no such upload") from None

    async def _append(
        self, request: Request, info: UploadInfo, checksum: tuple[str, bytes] | None
    ) -> UploadInfo:
        hasher = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
        fd = await asyncio.to_thread(self.store.open_for_append, info)
        received = 0
        buffer = bytearray()
        overflow = False
        interrupted: str | None = None  # disconnect | idle | takeover
        metrics.UPLOADS_ACTIVE.inc()
        try:
            body = _BodyReader(
                request,
                self.cfg.body_idle_seconds,
                functools.partial(
                    asyncio.to_thread,
                    self.store.takeover_requested,
                    info.trailer_id,
                    info.upload_id,
                ),
            )
            try:
                while (chunk := await body.next_chunk()) is not None:
                    if info.offset + received + len(buffer) + len(chunk) > info.length:
                        overflow = True
                        break
                    if hasher is not None:
                        hasher.update(chunk)
                    buffer += chunk
                    if len(buffer) >= WRITE_BUFFER:
                        data, buffer = bytes(buffer), bytearray()
                        await asyncio.to_thread(_write_all, fd, data)
                        received += len(data)
            except _BodyEnded as ended:
                interrupted = ended.reason
            finally:
                body.close()
            if overflow:
                raise TusError(413, "body exceeds Upload-Length")
            if interrupted is not None:
                metrics.UPLOAD_BODIES_INTERRUPTED.labels(interrupted).inc()
            # Unchecksummed bytes that arrived are kept (the client HEADs and goes on from
            # there); a checksummed body is all or nothing.
            if buffer and (checksum is None or interrupted is None):
                await asyncio.to_thread(_write_all, fd, bytes(buffer))
                received += len(buffer)
            if checksum is not None and interrupted is not None:
                received = 0
            elif checksum is not None and hasher is not None and hasher.digest() != checksum[1]:
                metrics.CHECKSUM_MISMATCHES.inc()
                raise TusError(CHECKSUM_MISMATCH, "Checksum Mismatch")
            if info.offset + received == info.length:
                # The last bytes are here: only an admitted trailer's upload completes
                # (and so reaches PACS). Refused, nothing is committed: the offset stays
                # where it was, and the upload expires unless the trailer is reinstated.
                await self.callers.still_admitted(request, info)
            updated = (
                await asyncio.to_thread(self.store.commit, info, fd, info.offset + received)
                if received or interrupted is None
                else info
            )
        finally:
            os.close(fd)
            metrics.UPLOADS_ACTIVE.dec()
        if interrupted is not None and not updated.complete:
            log.warning(
                "upload body ended early; lock released, durable offset stands",
                extra={
                    "trailer": info.trailer_id,
                    "upload_id": info.upload_id,
                    "reason": interrupted,
                    "offset": updated.offset,
                    "bytes_kept": received,
                },
            )
            raise TusError(
                408 if interrupted == "idle" else 400,
                f"request body ended early ({interrupted}); HEAD and resume",
                {"Connection": "close", "Upload-Offset": str(updated.offset)},
            )
        metrics.BYTES_RECEIVED.labels(info.trailer_id).inc(received)
        if updated.complete:
            metrics.UPLOADS_COMPLETED.labels(info.trailer_id).inc()
            log.info(
                "upload complete",
                extra={
                    "trailer": info.trailer_id,
                    "upload_id": info.upload_id,
                    "bytes": info.length,
                },
            )
            if await self.announcer.announce(updated):
                reloaded = await asyncio.to_thread(self.store.load, info.trailer_id, info.upload_id)
                updated = reloaded or updated
        return updated

    async def options(self, request: Request, upload_id: str | None = None) -> Response:
        headers = {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(self.cfg.max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
        }
        return Response(status_code=204, headers=_base_headers(headers))

    def refused_creation(self, exc: TusError, trailer: str) -> TusError:
        """Name, log and count a refused creation (trailer and reason; never the
        object's identity: it is the trailer's to name, and UIDs stay out of this log)."""
        if exc.reason is None:
            exc.reason = _creation_refusal_reason(exc.status)
        metrics.UPLOAD_REFUSALS.labels(trailer or "unknown", exc.reason).inc()
        log.warning(
            "upload creation refused",
            extra={
                "trailer": trailer or "unknown",
                "reason": exc.reason,
                "status": exc.status,
                "permanent": CREATE_REFUSALS.get(exc.reason, False),
                "detail": exc.message,
            },
        )
        return exc

    @tus_handler
    async def create(self, request: Request) -> Response:
        trailer = ""
        try:
            trailer = self.callers.trailer_of(request)
            return await self.create_for(request, trailer)
        except TusError as exc:
            if exc.status >= 400 and "Location" not in exc.headers:
                raise self.refused_creation(exc, trailer) from None
            raise

    async def create_for(self, request: Request, trailer: str) -> Response:
        _check_resumable(request)
        if "upload-defer-length" in request.headers:
            raise TusError(400, "creation-defer-length is not supported", reason="invalid_metadata")
        try:
            length = _int_header(request.headers.get("upload-length"), "Upload-Length")
        except TusError as exc:
            exc.reason = "invalid_metadata"
            raise
        if length > self.cfg.max_size:
            raise TusError(413, "Upload-Length exceeds Tus-Max-Size", reason="too_large")
        if length == 0:
            raise TusError(400, "a sealed object is never empty", reason="invalid_metadata")
        try:
            identity = parse_upload_metadata(request.headers.get("upload-metadata"))
        except MetadataError as exc:
            raise TusError(400, str(exc), reason="invalid_metadata") from None
        if identity.sealed_size != length:
            raise TusError(400, "sealed_size differs from Upload-Length", reason="invalid_metadata")
        if self.cfg.key_ids is not None and identity.key_id not in self.cfg.key_ids:
            raise TusError(
                400,
                "sealed for a key id this data centre does not hold",
                title="sealing key not held",
                reason="unknown_key",
            )
        has_body = (
            request.headers.get("content-type") is not None
            or int(request.headers.get("content-length") or 0) > 0
        )
        try:
            # Count and create under one lock on the shared storage: checked apart, a
            # burst of POSTs (on any replicas) all saw room and all created (70 vs 64).
            async with self.store.creation_locked(trailer):
                active = await asyncio.to_thread(
                    self.store.unfinished_count, trailer, self.cfg.expiry_seconds
                )
                if active >= self.cfg.max_concurrent_uploads:
                    raise TusError(
                        429,
                        "too many unfinished uploads for this trailer",
                        {"Retry-After": "30"},
                        reason="too_many_uploads",
                    )
                info = await asyncio.to_thread(
                    self.store.create,
                    trailer,
                    length,
                    identity,
                    valid_traceparent(request.headers.get("traceparent")),
                    parse_received_at(request.headers.get(RECEIVED_AT_HEADER)),
                )
        except UploadLocked:
            raise TusError(
                503, "busy creating this trailer's uploads", {"Retry-After": "1"}
            ) from None
        metrics.UPLOADS_CREATED.labels(trailer).inc()
        headers = {"Location": f"{self.base}/{info.upload_id}"}
        if has_body:
            try:
                info = await self.receive(request, info, 0)
            except TusError as exc:
                # The upload exists (201 semantics are lost): report the error but keep the
                # Location so the client can HEAD and resume.
                exc.headers.setdefault("Location", headers["Location"])
                raise
            headers["Upload-Offset"] = str(info.offset)
        headers.update(_expires(info, self.cfg))
        return Response(status_code=201, headers=_base_headers(headers))

    @tus_handler
    async def head(self, request: Request, upload_id: str) -> Response:
        trailer = self.callers.trailer_of(request)
        _check_resumable(request)
        info = await self.own_upload(trailer, upload_id)
        headers = {
            "Upload-Offset": str(info.offset),
            "Upload-Length": str(info.length),
            **_expires(info, self.cfg),
        }
        return Response(status_code=200, headers=_base_headers(headers))

    @tus_handler
    async def patch(self, request: Request, upload_id: str) -> Response:
        trailer = self.callers.trailer_of(request)
        _check_resumable(request)
        offset = _int_header(request.headers.get("upload-offset"), "Upload-Offset")
        info = await self.own_upload(trailer, upload_id)
        info = await self.receive(request, info, offset)
        headers = {"Upload-Offset": str(info.offset), **_expires(info, self.cfg)}
        return Response(status_code=204, headers=_base_headers(headers))

    @tus_handler
    async def delete(self, request: Request, upload_id: str) -> Response:
        trailer = self.callers.trailer_of(request)
        _check_resumable(request)
        info = await self.own_upload(trailer, upload_id)
        if info.complete:
            raise TusError(409, "a completed upload is processed and removed by the ingest")
        try:
            async with self.store.locked(trailer, upload_id):
                await asyncio.to_thread(self.store.delete, trailer, upload_id)
        except UploadLocked:
            raise TusError(423, "upload is being written", {"Retry-After": "1"}) from None
        except UploadVanished:
            raise TusError(404, "no such upload") from None
        return Response(status_code=204, headers=_base_headers())
