"""The HTTPS (tus + receipts) server: uvicorn with client certificates, plus a small
protocol adapter that hands the verified peer certificate to the application.

uvicorn does not pass client certificates to the ASGI app (the ASGI TLS extension is
not implemented there). :class:`PeerCertH11Protocol` is uvicorn's own h11 protocol with
one addition: when a connection is made it reads the certificate the TLS layer verified
and wraps the app for that connection so every request's scope carries it, in the shape
of the ASGI TLS extension::

    scope["extensions"]["tls"] = {"client_cert_chain": [<PEM>], "client_cert_der": <DER>,
                                  "tls_version": 0x0304, ...}

The adapter relies on two uvicorn details, pinned by tests/test_tlsserver.py: the
protocol keeps the app in ``self.app`` and reads it there for every request.

The adapter also does the TLS handshake itself (``loop.start_tls`` on the accepted TCP
connection) instead of leaving it to the listening server: asyncio drops a failed
server-side handshake without a word (an ``ssl.SSLError`` is an ``OSError``, logged only
in asyncio debug mode), so a trailer whose certificate expired, or that has none, was
invisible. Here each failure is logged with the peer address and reason and counted in
``trailerlink_ingest_tls_handshake_failures_total{reason}`` (:func:`handshake_failure`).
So uvicorn itself is given no TLS settings (its start-up line says ``http://`` for this
port); the context is :func:`server_ssl_context`'s, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from trailerlink_ingest.metrics import (
    CONNECTIONS_CLOSED,
    REQUESTS_REFUSED,
    TLS_HANDSHAKE_FAILURES,
)

log = logging.getLogger(__name__)

_TLS_VERSIONS = {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303}
TLS_HANDSHAKE_TIMEOUT_SECONDS = 60.0  # asyncio's default for server-side TLS, kept
HANDSHAKE_LOG_INTERVAL_SECONDS = 60.0  # per peer address and reason: a flood logs little
# A request's line and headers must be complete this long after the connection is ready
# (or the last response went): uvicorn's keep-alive timer stops at the first byte, and
# nothing else bounds a peer that sends headers a byte at a time.
REQUEST_HEAD_DEADLINE_SECONDS = 20.0

# OpenSSL X509_V_ERR_* codes (x509_vfy.h) a refused client certificate carries.
_UNKNOWN_CA_CODES = frozenset({2, 18, 19, 20, 21, 24})
_EXPIRED, _NOT_YET_VALID = 10, 9
_PROTOCOL_VERSION = frozenset(
    {
        "UNSUPPORTED_PROTOCOL",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "NO_PROTOCOLS_AVAILABLE",
        "VERSION_TOO_LOW",
        "WRONG_SSL_VERSION",
    }
)
_NOT_TLS = frozenset({"HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER"})


def handshake_failure(exc: BaseException | None) -> tuple[str, str]:
    """(reason, detail) of a failed server-side handshake: the reason one of
    ``no_certificate``, ``unknown_ca``, ``expired``, ``not_yet_valid``,
    ``bad_certificate``, ``protocol_version``, ``not_tls``, ``client_refused`` (the
    client's TLS stack refused ours, e.g. it does not trust our server certificate),
    ``timeout``, ``closed`` (the peer went away mid-handshake: also what a TCP health
    check looks like) or ``other``; the detail OpenSSL's own words, never patient data."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = f"{code}: {exc.verify_message}"
        if code == _EXPIRED:
            return "expired", detail
        if code == _NOT_YET_VALID:
            return "not_yet_valid", detail
        if code in _UNKNOWN_CA_CODES:
            return "unknown_ca", detail
        return "bad_certificate", detail
    if isinstance(exc, ssl.SSLError):
        name = exc.reason or ""
        if name == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no_certificate", name
        if name in _PROTOCOL_VERSION:
            return "protocol_version", name
        if name in _NOT_TLS:
            return "not_tls", name
        if name.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")):
            return "client_refused", name
        if isinstance(exc, ssl.SSLEOFError) or name == "UNEXPECTED_EOF_WHILE_READING":
            return "closed", name
        return "other", name or type(exc).__name__
    if isinstance(exc, ConnectionAbortedError):  # asyncio's handshake timeout
        return "timeout", f"no handshake within {TLS_HANDSHAKE_TIMEOUT_SECONDS:g} s"
    if exc is None or isinstance(exc, ConnectionError | EOFError):
        return "closed", type(exc).__name__ if exc else "EOF"
    return "other", type(exc).__name__


class _PerConnectionApp:
    """The app, with this connection's TLS facts added to every scope."""

    def __init__(self, app: Any, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = self.tls
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


class RejectAmbiguousFraming:
    """Refuses a request that carries both ``Content-Length`` and ``Transfer-Encoding``:
    400 and the connection closed (RFC 9112 6.1). h11 lets Transfer-Encoding win and
    keeps the connection, but a proxy in front may have framed the same bytes by
    Content-Length: the classic request-smuggling split, where the rest of one request
    is read as the next one. Wrapped around the app for both TLS modes (pod and
    ingress)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope.get("headers") or ()}
            if b"content-length" in names and b"transfer-encoding" in names:
                await self._refuse(scope, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: dict[str, Any], send: Any) -> None:
        client = scope.get("client") or ("", 0)
        log.warning(
            "request with both Content-Length and Transfer-Encoding refused; connection closed",
            extra={"peer": client[0], "method": scope.get("method")},
        )
        REQUESTS_REFUSED.labels("400").inc()
        body = b"Content-Length and Transfer-Encoding together are not allowed\n"
        # Connection: close makes h11 end the connection after this answer, so no byte
        # after the headers is ever parsed as a request.
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def tls_facts(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any]:
    """The ASGI-TLS-extension dict for one TLS connection (empty cert when none)."""
    if ssl_object is None:
        return {}
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_der": der,
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or "", None),
        "cipher_suite": None,
    }


def dead_peer_socket_options(
    keepalive_seconds: int, user_timeout_seconds: int
) -> list[tuple[int, int, int]]:
    """TCP options that make the kernel notice a peer that vanished without FIN or RST (a
    trailer whose 4G bearer dropped): keepalive probes after ``keepalive_seconds`` idle,
    then every third of that, three unanswered probes end it; and data unacknowledged
    for ``user_timeout_seconds`` ends it too (TCP_USER_TIMEOUT, RFC 5482). 0 leaves
    both off. Without them an accepted connection whose client is gone stays
    ESTABLISHED for as long as the kernel's defaults allow: two hours idle."""
    if keepalive_seconds <= 0:
        return []
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive_seconds),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, keepalive_seconds // 3)),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
    ]
    if user_timeout_seconds > 0:
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_seconds * 1000))
    return options


class _HandshakeBuffer(asyncio.Protocol):
    """Holds what the TLS layer delivers between the end of the handshake and the moment
    the HTTP protocol takes the connection (start_tls reads on before it returns)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)


class _HandshakeLog:
    """Logs a failed handshake at most once per peer address and reason per interval
    (a scanner or a misconfigured trailer retrying would otherwise write a line per
    attempt); every failure is counted regardless."""

    def __init__(self, interval: float = HANDSHAKE_LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def failed(self, peer: str, reason: str, detail: str) -> None:
        TLS_HANDSHAKE_FAILURES.labels(reason).inc()
        now = time.monotonic()
        key = (peer, reason)
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._last[key] = (last, suppressed + 1)
            return
        if len(self._last) > 10_000:  # many addresses: forget, do not grow
            self._last.clear()
        self._last[key] = (now, 0)
        # A peer closing before any handshake is what TCP health checks do: not a warning.
        level = logging.DEBUG if reason == "closed" else logging.WARNING
        log.log(
            level,
            "TLS handshake failed",
            extra={
                "peer": peer,
                "reason": reason,
                "detail": detail,
                "suppressed_since_last": suppressed,
            },
        )


class PeerCertH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, exposing the verified client certificate in the scope,
    with the dead-peer socket options (:func:`dead_peer_socket_options`) set on every
    accepted connection and, with ``tls_context``, the TLS handshake done here so that a
    failed one is logged and counted (see the module docstring)."""

    socket_options: ClassVar[list[tuple[int, int, int]]] = []
    tls_context: ClassVar[ssl.SSLContext | None] = None
    handshake_log: ClassVar[_HandshakeLog] = _HandshakeLog()
    head_deadline_seconds: ClassVar[float] = REQUEST_HEAD_DEADLINE_SECONDS
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for level, name, value in self.socket_options:
                with contextlib.suppress(OSError):
                    sock.setsockopt(level, name, value)
        if self.tls_context is None:
            self._serve(transport)
            return
        # The ClientHello is for the TLS layer: keep it from h11 until start_tls has the
        # transport (start_tls pauses too, but only once its task runs).
        transport.pause_reading()
        self._handshake = asyncio.ensure_future(self._start_tls(transport, self.tls_context))

    async def _start_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if peername else ""
        buffer = _HandshakeBuffer()
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport,
                buffer,
                context,
                server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_SECONDS,
            )
        except (OSError, EOFError) as exc:  # ssl.SSLError and ConnectionError are OSErrors
            self.handshake_log.failed(peer, *handshake_failure(exc))
            transport.close()
            return
        if tls is None:  # the peer closed the connection as the handshake ended
            self.handshake_log.failed(peer, *handshake_failure(None))
            transport.close()
            return
        tls.set_protocol(self)
        self._serve(tls)
        if buffer.data:
            self.data_received(bytes(buffer.data))
        if buffer.eof:
            self.eof_received()
        if buffer.lost is not None:
            self.connection_lost(buffer.lost[0])

    def _serve(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.app = _PerConnectionApp(self.app, tls_facts(ssl_object))

    # --- the request-head deadline ------------------------------------------------------
    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_timer = self.loop.call_later(self.head_deadline_seconds, self._head_late)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        CONNECTIONS_CLOSED.labels("request_head_deadline").inc()
        peername = self.transport.get_extra_info("peername")
        log.warning(
            "request line and headers not complete in time; connection closed",
            extra={
                "peer_address": str(peername[0]) if peername else "",
                "seconds": self.head_deadline_seconds,
            },
        )
        self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a whole request head arrived
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()  # the next request's head, on this kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)


def server_ssl_context(cert_file: Path, key_file: Path, client_ca_file: Path) -> ssl.SSLContext:
    """TLS 1.3 only, client certificate required and verified against ``client_ca_file``.

    Unknown issuers and expired certificates fail the handshake here; allow-list and
    revocation are checked per request by the application (they reload at run time).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(cert_file), str(key_file))
    context.load_verify_locations(cafile=str(client_ca_file))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class _QuietServer(uvicorn.Server):
    """No signal handling of its own: the Service handles SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def build_https_server(
    app: Any,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
    *,
    limit_concurrency: int | None = None,
    socket_options: list[tuple[int, int, int]] | None = None,
    head_deadline_seconds: float = REQUEST_HEAD_DEADLINE_SECONDS,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``host:port`` with ``context`` (None: plain HTTP,
    for a deployment behind a TLS-terminating proxy); ``socket_options`` are set on every
    accepted connection."""
    # TLS is the protocol's own (not uvicorn's ssl settings): see the module docstring.
    protocol = type(
        "PeerCertH11Protocol",
        (PeerCertH11Protocol,),
        {
            "socket_options": list(socket_options or []),
            "tls_context": context,
            "handshake_log": _HandshakeLog(),
            "head_deadline_seconds": head_deadline_seconds,
        },
    )
    config = uvicorn.Config(
        RejectAmbiguousFraming(app),
        host=host,
        port=port,
        http=protocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return _QuietServer(config)


async def serve_until(server: uvicorn.Server, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; raises OSError if the port cannot be bound."""
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if serving in done:
        stopping.cancel()
        try:
            serving.result()
        except SystemExit:
            raise OSError("HTTPS port could not be served") from None
        if not stop.is_set():
            raise OSError("HTTPS server ended on its own")
        return
    server.should_exit = True
    with contextlib.suppress(SystemExit, Exception):
        await asyncio.wait_for(serving, 10)
