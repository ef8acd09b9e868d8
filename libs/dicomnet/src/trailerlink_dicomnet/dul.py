"""A DICOM Upper Layer provider that reads only what it has checked, within a deadline.

pynetdicom's DUL reads a PDU's 6-byte header and then allocates and reads whatever
length the header claims, before any check, with no deadline: six bytes from a port
scan could make it claim 4 GiB, and a peer that stops halfway through a PDU held its
thread forever. :class:`BoundedDUL` replaces that one step (``_read_pdu_data``):

* the header is checked against :class:`~trailerlink_dicomnet.limits.ReceiveLimits`
  before a byte of the body is read (type known, fixed lengths exact, A-ASSOCIATE and
  everything before acceptance bounded, P-DATA-TF no longer than we advertised); a
  refused header ends the connection with an A-ABORT at once, and the service is told
  why (it counts and logs it);
* a PDU, once its first byte has arrived, must be complete within the deadline;
* bodies are read into one buffer per association, allocated once at the size of the
  largest PDU allowed at the time (a few KiB until the peer is accepted);
* P-DATA-TF is split into its PDVs here (checked: every item inside the PDU, a context
  the association accepted), without pynetdicom's generic decoder. Other PDUs are
  decoded by pynetdicom as before.

And, when it has nothing to do, the reactor waits on its socket and on a wake-up pipe
(:meth:`send_pdu` writes to it) instead of sleeping a fixed millisecond between polls:
every step of an association no longer waits up to that millisecond.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from trailerlink_dicomnet import limits as lim
from trailerlink_dicomnet.limits import ReceiveLimits

RefusalHandler = Callable[[str, str], None]  # (reason, peer address)

_HEADER = struct.Struct(">BBL")
_ITEM_LENGTH = struct.Struct(">L")
_IDLE_WAIT_SECONDS = 0.001  # pynetdicom's own idle delay: the same wake-ups when idle
_WAIT_SLICE_SECONDS = 0.05  # how soon a waiting association thread sees its connection end
# States in which the peer has not been accepted yet (PS3.8 9.2, acceptor side).
_NOT_ACCEPTED = frozenset({"Sta1", "Sta2", "Sta3", "Sta4", "Sta5"})
# A-ABORT reasons (PS3.8 Table 9-26) by why we refuse.
_ABORT_REASON = {
    lim.PDU_UNKNOWN_TYPE: 0x01,  # unrecognized-PDU
    lim.PDU_BAD_LENGTH: 0x06,  # invalid-PDU-parameter value
    lim.PDU_TOO_LONG: 0x06,
    lim.PDU_MALFORMED: 0x06,
    lim.PDU_DEADLINE: 0x00,  # reason-not-specified
    lim.PDU_UNEXPECTED: 0x02,  # unexpected-PDU
}


@dataclass(frozen=True)
class FirstHeader:
    """A connection's first PDU header, read and checked before its association was
    made (see :mod:`trailerlink_dicomnet.server`), and when it began to arrive."""

    data: bytes
    started: float


def send_abort(sock: socket.socket, reason: str, wait_seconds: float = 1.0) -> None:
    """An A-ABORT (service-provider source) if it can be sent within ``wait_seconds``."""
    abort = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, _ABORT_REASON.get(reason, 0)))
    with contextlib.suppress(OSError, ValueError):
        sock.settimeout(wait_seconds)
        sock.sendall(abort)


class MalformedPdu(ValueError):
    """A P-DATA-TF whose items do not add up."""


class ReceivedPData(P_DATA_TF):
    """A P-DATA-TF split by :func:`split_pdvs`: the state machine only asks it for its
    primitive."""

    def __init__(self, pdvs: list[tuple[int, bytes]]) -> None:
        super().__init__()
        self.pdvs = pdvs

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        # As pynetdicom's own to_primitive: fill the list its getter returns (the setter
        # re-checks every item, which split_pdvs has done).
        primitive.presentation_data_value_list = []
        primitive.presentation_data_value_list.extend(self.pdvs)
        return primitive


def split_pdvs(body: memoryview, accepted: frozenset[int] | None) -> list[tuple[int, bytes]]:
    """The PDVs of a P-DATA-TF's variable field as (context id, control header +
    fragment), copied out of ``body``. Every item must lie inside the PDU; with
    ``accepted``, every context must be one of them."""
    pdvs: list[tuple[int, bytes]] = []
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:  # item length (4), context id (1), control header (1)
            raise MalformedPdu("truncated PDV item")
        (length,) = _ITEM_LENGTH.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise MalformedPdu("PDV item length outside the PDU")
        context_id = body[offset + 4]
        if accepted is not None and context_id not in accepted:
            raise MalformedPdu("PDV on a presentation context not accepted")
        pdvs.append((context_id, bytes(body[offset + 5 : offset + 4 + length])))
        offset += 4 + length
    return pdvs


class BoundedDUL(DULServiceProvider):
    """pynetdicom's DUL with a bounded, deadlined PDU reader and a socket-waiting idle."""

    def __init__(
        self,
        assoc: Any,
        limits: ReceiveLimits,
        on_refusal: RefusalHandler,
        peer: str,
        first_header: FirstHeader | None = None,
    ) -> None:
        self._first_header = first_header
        self._limits = limits
        self._on_refusal = on_refusal
        self._peer = peer
        self._header = bytearray(6)
        self._buffer = bytearray(0)
        self._wake: tuple[int, int] | None = None
        self._waiting = False
        super().__init__(assoc)
        reader, writer = os.pipe()
        os.set_blocking(reader, False)
        os.set_blocking(writer, False)
        self._wake = (reader, writer)
        # Closed only once nothing can reach this DUL: closing at the association's end,
        # while another thread might still queue a primitive, could let a reused
        # descriptor number take a stray byte meant for this pipe.
        self._pipe_closer = weakref.finalize(self, _close_pipe, reader, writer)

    # --- reading ---------------------------------------------------------------------
    def _read_pdu_data(self) -> None:
        transport = self.socket
        sock = getattr(transport, "socket", None)
        if sock is None:
            self.event_queue.put("Evt17")
            return
        header = memoryview(self._header)
        if self._first_header is not None:
            # The server read (and checked) the first header before this association
            # existed; the PDU's deadline runs from when that header began.
            header[:] = self._first_header.data
            deadline = self._first_header.started + self._limits.pdu_deadline_seconds
            self._first_header = None
        else:
            deadline = time.monotonic() + self._limits.pdu_deadline_seconds
            if not self._read_exact(sock, header, deadline):
                return
        pdu_type, _reserved, length = _HEADER.unpack_from(header)
        accepted = self.state_machine.current_state not in _NOT_ACCEPTED
        problem = self._limits.header_problem(pdu_type, length, accepted)
        if problem is not None:
            self.refuse(problem)
            return
        if len(self._buffer) < length:
            # Once per association per limit: the RQ's size before acceptance, the
            # largest PDU we advertised after it.
            self._buffer = bytearray(self._limits.buffer_bytes() if accepted else length)
        body = memoryview(self._buffer)[:length]
        if not self._read_exact(sock, body, deadline):
            return
        if pdu_type == lim.P_DATA_TF:
            try:
                pdvs = split_pdvs(body, self._accepted_contexts() if accepted else None)
            except MalformedPdu:
                self.refuse(lim.PDU_MALFORMED)
                return
            self.event_queue.put("Evt10")
            self._recv_pdu.put(ReceivedPData(pdvs))
            return
        try:
            pdu, event = self._decode_pdu(bytearray(header.tobytes() + body.tobytes()))
        except Exception:  # pynetdicom's decoders raise all sorts on garbage
            self.refuse(lim.PDU_MALFORMED)
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _accepted_contexts(self) -> frozenset[int]:
        return frozenset(getattr(self.assoc, "_accepted_cx", {}))

    def _read_exact(self, sock: socket.socket, view: memoryview, deadline: float) -> bool:
        """Fill ``view`` before ``deadline``; False (and the connection handled) if not."""
        got, want = 0, len(view)
        while got < want:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.refuse(lim.PDU_DEADLINE)
                return False
            try:
                sock.settimeout(remaining)
                n = sock.recv_into(view[got:], want - got)
            except TimeoutError:
                self.refuse(lim.PDU_DEADLINE)
                return False
            except (OSError, ValueError):
                self._transport_ended()
                return False
            if not n:
                self._transport_ended()  # the peer closed
                return False
            got += n
        return True

    def _transport_ended(self) -> None:
        """The peer closed or the connection broke: close our end too (Evt17), so that
        the association thread, waiting for a primitive, sees it and ends now."""
        transport = self.socket
        if transport is not None and getattr(transport, "socket", None) is not None:
            transport.close()
        else:
            self.event_queue.put("Evt17")

    def refuse(self, reason: str) -> None:
        """End the connection now: an A-ABORT if it can be sent at once, then close."""
        self._on_refusal(reason, self._peer)
        transport = self.socket
        sock = getattr(transport, "socket", None)
        if sock is not None:
            send_abort(sock, reason)
        if transport is not None:
            transport.close()  # Evt17: the state machine ends the association
        else:
            self.event_queue.put("Evt17")

    # --- the association thread's waits ----------------------------------------------
    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """pynetdicom's, but a wait ends as soon as the connection is gone.

        An acceptor's thread waits ``acse_timeout`` (30 s) for the A-ASSOCIATE-RQ; when
        the connection ended before one came (refused, closed, a port scan) nothing is
        ever queued, so the thread (and the peer's connection slot) would stay that
        long. Here the wait is sliced and ends once the transport is closed."""
        if not wait:
            return super().receive_pdu(wait=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = _WAIT_SLICE_SECONDS
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return None
            primitive = super().receive_pdu(wait=True, timeout=step)
            if primitive is not None:
                return primitive
            if getattr(self.socket, "socket", None) is None:
                return super().receive_pdu(wait=False)  # a last look, then give up

    # --- waiting when idle -----------------------------------------------------------
    @property
    def _run_loop_delay(self) -> float:
        """Read by the reactor as its idle sleep: wait here until the socket is
        readable, a primitive was queued or pynetdicom's millisecond has passed, then
        ask for no further sleep."""
        transport = self.socket
        sock = getattr(transport, "socket", None)
        wake = self._wake
        if sock is None or wake is None or not getattr(transport, "_is_connected", False):
            return _IDLE_WAIT_SECONDS  # closing or closed: pynetdicom's own behaviour
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return 0.0  # decrypted bytes already buffered: read them now
        self._waiting = True
        try:
            if self.to_provider_queue.empty():
                ready, _, _ = select.select([sock, wake[0]], [], [], _IDLE_WAIT_SECONDS)
                if wake[0] in ready:
                    os.read(wake[0], 4096)
        except (OSError, ValueError):
            pass  # closed meanwhile: the reactor's own poll of the socket reports it
        finally:
            self._waiting = False
        return 0.0

    @_run_loop_delay.setter
    def _run_loop_delay(self, _value: float) -> None:
        """pynetdicom sets its default in ``__init__``; the wait above replaces it."""

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        wake = self._wake
        if wake is not None and self._waiting:
            with contextlib.suppress(OSError):  # full: the reactor is woken already
                os.write(wake[1], b"\0")


def _close_pipe(reader: int, writer: int) -> None:
    os.close(reader)
    os.close(writer)
