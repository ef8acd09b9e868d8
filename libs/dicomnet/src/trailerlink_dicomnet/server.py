"""A pynetdicom association server that no single peer can starve.

pynetdicom's :class:`~pynetdicom.transport.ThreadedAssociationServer` accepts every
connection, does a TLS handshake inside its one listening thread (a peer that opens a
TLS connection and says nothing stalls every other connection), and gives each
association pynetdicom's unbounded PDU reader. :class:`BoundedAssociationServer`:

* counts connections per peer address and in total, and closes one over either limit
  at once (before a byte is read), so one misbehaving host cannot take the slots the
  modality needs;
* does the TLS handshake in the connection's own thread, within a deadline, and reports
  a failed one (reason, peer, the certificate's subject when one was presented);
* limits associations by those that sent a whole A-ASSOCIATE-RQ (pynetdicom counts
  every connection's thread, so silent connections took the modality's slots);
* gives every association a :class:`~trailerlink_dicomnet.dul.BoundedDUL` and,
  optionally, a DIMSE provider of the service's own (per association, nothing
  process-wide).

Refusals go to the service's ``on_refusal(reason, peer)``, which counts and logs them
(reason values in :mod:`trailerlink_dicomnet.limits`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.acse import ACSE
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from trailerlink_dicomnet import limits as lim
from trailerlink_dicomnet.assumptions import check_pynetdicom
from trailerlink_dicomnet.dul import BoundedDUL, FirstHeader, RefusalHandler, send_abort
from trailerlink_dicomnet.limits import ReceiveLimits

log = logging.getLogger(__name__)

DimseFactory = Callable[[Association], DIMSEServiceProvider]


class PeerSlots:
    """Open connections, per peer address and in total, under their limits."""

    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer = per_peer
        self.total = total
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, peer: str) -> str | None:
        """Take a slot for ``peer``; the refusal reason if none is free."""
        with self._lock:
            if sum(self._open.values()) >= self.total:
                return lim.TOO_MANY_CONNECTIONS
            if self._open.get(peer, 0) >= self.per_peer:
                return lim.TOO_MANY_FROM_PEER
            self._open[peer] = self._open.get(peer, 0) + 1
            return None

    def give_back(self, peer: str) -> None:
        with self._lock:
            left = self._open.get(peer, 0) - 1
            if left > 0:
                self._open[peer] = left
            else:
                self._open.pop(peer, None)

    def open_connections(self) -> int:
        with self._lock:
            return sum(self._open.values())


class AssociationSlots:
    """Associations whose A-ASSOCIATE-RQ arrived, under ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._taken = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._taken >= self.limit:
                return False
            self._taken += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._taken = max(0, self._taken - 1)


class _SlotACSE(ACSE):
    """pynetdicom's ACSE; an acceptor's negotiation first takes an association slot.

    pynetdicom's own limit counts every acceptor thread, including connections that
    never sent an A-ASSOCIATE-RQ, so a few silent connections could make the modality's
    next association "Local Limit Exceeded". Here only identified ones count."""

    def __init__(self, assoc: Association, slots: AssociationSlots) -> None:
        super().__init__(assoc)
        self._slots = slots
        self.holds_slot = False

    def negotiate_association(self) -> None:
        if self.assoc.is_acceptor:
            if not self._slots.take():
                self.send_reject(0x02, 0x03, 0x02)  # transient, provider, local limit
                evt.trigger(self.assoc, evt.EVT_REJECTED, {})
                self.assoc.kill()
                return
            self.holds_slot = True
        super().negotiate_association()

    def give_back(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self._slots.give_back()


class _BoundedAssociation(Association):
    """An acceptor Association whose DUL (and optionally DIMSE provider) are ours, and
    whose end gives its connection's slot back."""

    def __init__(
        self,
        ae: ApplicationEntity,
        dul: Callable[[Association], BoundedDUL],
        dimse: DimseFactory | None,
        slots: AssociationSlots,
        on_end: Callable[[], None],
    ) -> None:
        super().__init__(ae, MODE_ACCEPTOR)
        self.acse: _SlotACSE = _SlotACSE(self, slots)
        self.dul = dul(self)  # before set_socket: the socket's Evt5 goes to this DUL
        # Their setters put the timeouts on the DUL's timers (ARTIM, idle): again, on ours.
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        if dimse is not None:
            self.dimse = dimse(self)
        self._on_end = on_end

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self.acse.give_back()
            self._on_end()


class _SlotSocket(AssociationSocket):
    """The association's transport; closing it gives the peer's slot back at once (the
    association thread may take a moment longer to end, which gives it back too)."""

    def __init__(
        self, assoc: Association, give_back: Callable[[], None], client_socket: socket.socket
    ) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self._give_back = give_back

    def close(self) -> None:
        self._give_back()  # first: the peer may reconnect the moment it sees the close
        super().close()


def _peer_host(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)


def _tls_reason(exc: BaseException) -> str:
    """A short, patient-data-free reason for a failed handshake."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or type(exc).__name__).lower()
    return type(exc).__name__


class _BoundedRequestHandler(RequestHandler):
    server: BoundedAssociationServer

    def handle(self) -> None:
        server = self.server
        peer = _peer_host(self.client_address)
        started = False
        # pynetdicom leaves Nagle's algorithm on (dcmtk turns it off): a last response
        # sent while earlier ones were unacknowledged waited for the peer's delayed ACK
        # on every worklist query (docs/adr/0009).
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if not self._handshake(peer):
                return
            first = self._first_header(peer)
            if first is None:
                return
            assoc = self._create_association(first)
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            started = True
        finally:
            if not started:
                server.slots.give_back(peer)

    def _handshake(self, peer: str) -> bool:
        server = self.server
        sock: socket.socket = self.request
        context = server.ssl_context
        if context is None:
            return True
        sock.settimeout(server.limits.tls_handshake_seconds)
        try:
            self.request = context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            server.on_refusal(lim.TLS_HANDSHAKE, peer)
            log.warning(
                "DICOM TLS handshake failed",
                extra={"peer_address": peer, "reason": _tls_reason(exc)},
            )
            sock.close()
            return False
        subject = _subject(self.request)
        if subject:
            log.debug("DICOM TLS peer", extra={"peer_address": peer, "subject": subject})
        return True

    def _first_header(self, peer: str) -> FirstHeader | None:
        """Read and check the connection's first PDU header before anything is built
        for it: it must start an A-ASSOCIATE-RQ within the limits (PS3.8: nothing else
        is valid first), or the connection ends here, costing one thread and a few
        bytes rather than an association with its three threads."""
        server = self.server
        sock: socket.socket = self.request
        header = bytearray(6)
        view = memoryview(header)
        started: float | None = None
        wait_until = time.monotonic() + (self.ae.acse_timeout or 30.0)
        got = 0
        while got < 6:
            remaining = wait_until - time.monotonic()
            if remaining <= 0:
                self._end(sock, peer, lim.PDU_DEADLINE)
                return None
            try:
                sock.settimeout(remaining)
                n = sock.recv_into(view[got:], 6 - got)
            except TimeoutError:
                self._end(sock, peer, lim.PDU_DEADLINE)
                return None
            except (OSError, ValueError):
                n = 0
            if not n:
                sock.close()  # gone before a whole header (a scan, a probe): nothing to say
                return None
            if started is None:
                started = time.monotonic()
                # From the first byte, the header is a PDU like any other.
                wait_until = min(wait_until, started + server.limits.pdu_deadline_seconds)
            got += n
        problem = first_header_problem(server.limits, bytes(header))
        if problem is not None:
            self._end(sock, peer, problem)
            return None
        assert started is not None
        return FirstHeader(bytes(header), started)

    def _end(self, sock: socket.socket, peer: str, reason: str) -> None:
        self.server.on_refusal(reason, peer)
        send_abort(sock, reason)
        sock.close()

    def _create_association(self, first: FirstHeader | None = None) -> Association:
        """pynetdicom's own set-up of an acceptor, with our DUL and DIMSE provider."""
        server = self.server
        peer = _peer_host(self.client_address)
        released, release_lock = threading.Event(), threading.Lock()

        def give_back() -> None:
            with release_lock:
                if released.is_set():
                    return
                released.set()
            server.slots.give_back(peer)

        assoc = _BoundedAssociation(
            self.ae,
            lambda a: BoundedDUL(a, server.limits, server.on_refusal, peer, first),
            server.dimse_factory,
            server.associations,
            give_back,
        )
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        transport = _SlotSocket(assoc, give_back, client_socket=self.request)
        assoc.set_socket(transport)
        assoc.acceptor.maximum_length = server.limits.max_pdu_bytes
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:  # type: ignore[misc]
                    assoc.bind(event, handler, args)
        return assoc


def _subject(sock: ssl.SSLSocket) -> str:
    try:
        cert = sock.getpeercert() or {}
    except (ValueError, ssl.SSLError):
        return ""
    # The stub gives every value of the dict one union type; "subject" is always the
    # sequence of RDNs, each a sequence of (name, value) pairs.
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", cert.get("subject", ()))
    parts = [f"{k}={v}" for rdn in subject for k, v in rdn]
    return ",".join(parts)


class BoundedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with per-peer limits, deadlined TLS handshakes in
    the connection's thread and the bounded receive path (see the module)."""

    # socketserver listens with a backlog of 5: a burst of connections (a scan, a
    # flood) filled it and the modality's SYN waited for a retransmission (1 s, 3 s...).
    # Accepting is cheap and every connection is then limited, so accept them all.
    request_queue_size = 128

    def __init__(
        self,
        ae: ApplicationEntity,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[Any],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[Any] | None = None,
        *,
        limits: ReceiveLimits,
        on_refusal: RefusalHandler,
        dimse_factory: DimseFactory | None = None,
    ) -> None:
        self.limits = limits
        self.on_refusal = on_refusal
        self.dimse_factory = dimse_factory
        self.slots = PeerSlots(limits.max_connections_per_peer, limits.max_connections)
        self.associations = AssociationSlots(limits.max_associations)
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            ssl_context,
            evt_handlers,
            request_handler=_BoundedRequestHandler,
        )

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only: the TLS handshake happens in the connection's own thread."""
        assert self.socket is not None
        return self.socket.accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """socketserver's hook, in the listening thread: a slot or an immediate close.

        Without TLS, a first header already waiting in the socket is looked at here too
        (a peek, never a wait): a connection that starts with anything but a sound
        A-ASSOCIATE-RQ header is refused before a thread is started for it, which keeps
        a flood of such connections cheap."""
        peer = _peer_host(client_address)
        reason = self.slots.take(peer)
        if reason is None and self.ssl_context is None:
            reason = _peeked_problem(self.limits, request)
            if reason is not None:
                self.slots.give_back(peer)
                send_abort(request, reason, wait_seconds=0.1)
        if reason is None:
            return True
        self.on_refusal(reason, peer)
        return False  # socketserver closes the connection


def first_header_problem(limits: ReceiveLimits, header: bytes) -> str | None:
    """Why a connection's first PDU header is refused (PS3.8: only an A-ASSOCIATE-RQ
    may come first), or None."""
    pdu_type, _reserved, length = struct.unpack(">BBL", header)
    problem = limits.header_problem(pdu_type, length, established=False)
    if problem is None and pdu_type != lim.A_ASSOCIATE_RQ:
        problem = lim.PDU_UNEXPECTED
    return problem


def _peeked_problem(limits: ReceiveLimits, sock: socket.socket) -> str | None:
    try:
        header = sock.recv(6, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # nothing there yet (or gone): the connection's thread will see
        return None
    return first_header_problem(limits, header) if len(header) == 6 else None


def start_bounded_server(
    ae: ApplicationEntity,
    address: tuple[str, int],
    limits: ReceiveLimits,
    on_refusal: RefusalHandler,
    *,
    ssl_context: ssl.SSLContext | None = None,
    evt_handlers: list[Any] | None = None,
    dimse_factory: DimseFactory | None = None,
) -> BoundedAssociationServer:
    """``ae.start_server(address, block=False, ...)`` with the bounded server.

    Refuses to start (:class:`~trailerlink_dicomnet.assumptions.PynetdicomMismatch`) on
    a pynetdicom this library was not written against. ``ae.maximum_pdu_size`` is set
    to the limit, so what we advertise is what we enforce."""
    check_pynetdicom()
    ae.maximum_pdu_size = limits.max_pdu_bytes
    # Our slots limit associations (see _SlotACSE); pynetdicom's own count of threads
    # must never trip first, including threads of connections just closed.
    ae.maximum_associations = limits.max_connections + limits.max_associations
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=evt_handlers,
        server_class=BoundedAssociationServer,
        limits=limits,
        on_refusal=on_refusal,
        dimse_factory=dimse_factory,
    )
    assert isinstance(server, BoundedAssociationServer)
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
    thread.start()
    ae._servers.append(server)  # pynetdicom's shutdown() removes it from there
    return server
