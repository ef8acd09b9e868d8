"""A real bounded DICOM server in this process, for the library's own tests."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation, Verification
from trailerlink_dicomnet import BoundedAssociationServer, ReceiveLimits, start_bounded_server
from trailerlink_testing.ports import free_port

SERVER_AE = "BOUNDED"
LIMITS = ReceiveLimits(
    max_pdu_bytes=16384,
    max_associate_bytes=8192,
    pdu_deadline_seconds=1.0,
    max_connections=8,
    max_connections_per_peer=3,
    tls_handshake_seconds=1.0,
)


@dataclass
class Refusals:
    """What the server's on_refusal was told, in order."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, reason: str, peer: str) -> None:
        with self.lock:
            self.seen.append((reason, peer))

    def reasons(self) -> list[str]:
        with self.lock:
            return [r for r, _ in self.seen]


@dataclass
class Server:
    port: int
    server: BoundedAssociationServer
    refusals: Refusals
    stored: list[bytes]


def start(limits: ReceiveLimits = LIMITS, tls: ssl.SSLContext | None = None) -> Server:
    refusals = Refusals()
    stored: list[bytes] = []

    def on_store(event: evt.Event) -> int:
        stored.append(bytes(event.request.DataSet.getvalue()))
        return 0x0000

    ae = AE(ae_title=SERVER_AE)
    ae.add_supported_context(Verification)
    ae.add_supported_context(DigitalMammographyXRayImageStorageForPresentation)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    port = free_port()
    server = start_bounded_server(
        ae,
        ("127.0.0.1", port),
        limits,
        refusals,
        ssl_context=tls,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    return Server(port, server, refusals, stored)


@pytest.fixture
def bounded() -> Iterator[Server]:
    running = start()
    yield running
    running.server.shutdown()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def factory(**kwargs: object) -> Server:
        running = start(**kwargs)  # type: ignore[arg-type]
        started.append(running)
        return running

    yield factory
    for running in started:
        running.server.shutdown()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A raw TCP connection to the server from ``source`` (any 127/8 address)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def echo(port: int, tls: ssl.SSLContext | None = None) -> bool:
    """A real association and C-ECHO, as a modality would."""
    ae = AE(ae_title="MG1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    kwargs = {"tls_args": (tls, "localhost")} if tls is not None else {}
    assoc = ae.associate("127.0.0.1", port, ae_title=SERVER_AE, **kwargs)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0
    finally:
        assoc.release()


def _item(item_type: int, value: bytes) -> bytes:
    return bytes((item_type, 0)) + len(value).to_bytes(2, "big") + value


def associate_rq(calling: bytes = b"MG1", called: bytes = SERVER_AE.encode()) -> bytes:
    """A minimal, valid A-ASSOCIATE-RQ proposing Verification (PS3.8 9.3.2), built by
    hand so that tests can send all of it, part of it or a damaged copy."""
    presentation = _item(
        0x20,
        bytes((1, 0, 0, 0)) + _item(0x30, b"1.2.840.10008.1.1") + _item(0x40, b"1.2.840.10008.1.2"),
    )
    user = _item(
        0x50, _item(0x51, (16384).to_bytes(4, "big")) + _item(0x52, b"1.2.826.0.1.3680043.9.9999")
    )
    body = (
        b"\x00\x01\x00\x00"
        + called.ljust(16)
        + calling.ljust(16)
        + bytes(32)
        + _item(0x10, b"1.2.840.10008.3.1.1.1")
        + presentation
        + user
    )
    return b"\x01\x00" + len(body).to_bytes(4, "big") + body


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes; fails if it is still open after
    ``within`` seconds."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {within} s") from None
    except ConnectionResetError:
        pass  # closed with unread bytes: as closed as it gets
    return received


A_ABORT_TYPE = 0x07
