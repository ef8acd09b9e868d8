"""Stream C-STORE data sets into the encrypted spool as their PDUs arrive.

pynetdicom 3 can write an incoming C-STORE data set to a file instead of memory
(``_config.STORE_RECV_CHUNKED_DATASET``), but that file is a *plaintext* temporary
file in the system temp folder: patient data in the clear on disk, left behind by a
``kill -9``, and read a second time to encrypt it. pynetdicom opens that file through
``pynetdicom.dimse_messages.NamedTemporaryFile``, from the association's DUL thread,
and then writes the preamble, ``DICM``, the file meta and each data set fragment in
turn. We put a factory in that place which, for associations of our own AEs, returns a
:class:`SpoolSink`: a file-like object that ignores pynetdicom's three header writes
and feeds every data set fragment straight into an
:class:`~trailerlink_gateway.intake.IncomingObject` (hash, encrypt, walk). Other AEs in
the process get the original temporary file.

The sink is strict about what it expects from pynetdicom (the tests pin it): if the
write sequence ever differs, the store is refused, never stored wrongly.

pynetdicom also reads its socket 4 KiB at a time (``AssociationSocket.recv``): some
thirty Python-level calls per 128 KiB PDU, which made the association thread the
gateway's bottleneck. :func:`install` replaces that method with one that reads straight
into a buffer of the requested size (same contract: returns what was read, short only
when the peer closed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pynetdicom.dimse_messages as _dimse_messages
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

from trailerlink_gateway.intake import IncomingObject, StoreRequest, StoreResult
from trailerlink_gateway.statuses import CANNOT_UNDERSTAND

Begin = Callable[[StoreRequest], IncomingObject]

_ORIGINAL_TEMPFILE = _dimse_messages.NamedTemporaryFile
_lock = threading.Lock()
_begin_by_ae: dict[int, Begin] = {}
_open_sinks: dict[int, set[SpoolSink]] = {}
_PREAMBLE = b"\x00" * 128


def install(ae: object, begin: Begin) -> None:
    """Route C-STORE data sets received by ``ae`` into ``begin(request)``."""
    with _lock:
        _begin_by_ae[id(ae)] = begin
        _config.STORE_RECV_CHUNKED_DATASET = True
        _dimse_messages.NamedTemporaryFile = _factory  # type: ignore[assignment]
        AssociationSocket.recv = _recv_whole  # type: ignore[method-assign]


def _recv_whole(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """Read ``nr_bytes`` from the association's socket in as few calls as it allows."""
    sock = self.socket
    assert sock is not None
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    got = 0
    while got < nr_bytes:
        n = sock.recv_into(view[got:], nr_bytes - got)
        if not n:  # the peer closed: return what arrived, as pynetdicom does
            del view
            return buffer[:got]
        got += n
    return buffer


def uninstall(ae: object) -> None:
    with _lock:
        _begin_by_ae.pop(id(ae), None)


def _factory(*args: Any, **kwargs: Any) -> Any:
    assoc = getattr(threading.current_thread(), "assoc", None)
    begin = _begin_by_ae.get(id(getattr(assoc, "ae", None))) if assoc is not None else None
    if begin is None:
        return _ORIGINAL_TEMPFILE(*args, **kwargs)
    sink = SpoolSink(assoc, begin)  # type: ignore[arg-type]
    with _lock:
        _open_sinks.setdefault(id(assoc), set()).add(sink)
    return sink


def abandon_open(assoc: Association) -> int:
    """The association ended: drop every store still being received on it."""
    with _lock:
        sinks = _open_sinks.pop(id(assoc), set())
    for sink in sinks:
        sink.abandon()
    return len(sinks)


class SpoolSink:
    """What pynetdicom takes for its temporary data set file."""

    def __init__(self, assoc: Association, begin: Begin) -> None:
        self._assoc = assoc
        self._writes = 0
        self._problem = ""
        # pynetdicom unlinks ``name`` after the handler: a path that never exists.
        self.name = f"/nonexistent/trailerlink-sink-{id(self):x}"
        self.incoming: IncomingObject | None = None
        try:
            message = assoc.dimse.message
            command = message.command_set  # type: ignore[union-attr]
            context = assoc._accepted_cx[message.context_id]  # type: ignore[union-attr]
            request = StoreRequest(
                sop_class_uid=str(command.AffectedSOPClassUID or ""),
                sop_instance_uid=str(command.AffectedSOPInstanceUID or ""),
                transfer_syntax_uid=str(context.transfer_syntax[0]),
                calling_ae_title=str(assoc.requestor.ae_title).strip(),
                priority=int(command.Priority or 0),
            )
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            self._problem = "unexpected receive state (command set)"
            return
        self.incoming = begin(request)

    @property
    def file(self) -> SpoolSink:
        return self

    def flush(self) -> None:
        """pynetdicom flushes after every fragment; the intake buffers by chunk."""

    def write(self, data: bytes) -> int:
        self._writes += 1
        if self._writes == 1:
            if data != _PREAMBLE:
                self._problem = "unexpected receive sequence (preamble)"
        elif self._writes == 2:
            if data != b"DICM":
                self._problem = "unexpected receive sequence (prefix)"
        elif self._writes == 3:
            if not data.startswith(b"\x02\x00\x00\x00UL"):
                self._problem = "unexpected receive sequence (file meta)"
        elif not self._problem and self.incoming is not None:
            self.incoming.write(data)
        return len(data)

    def finish(self) -> StoreResult:
        """The data set is complete: store it and say what to answer."""
        with _lock:
            sinks = _open_sinks.get(id(self._assoc))
            if sinks is not None:
                sinks.discard(self)
        if self._problem or self.incoming is None:
            self.abandon()
            return StoreResult(CANNOT_UNDERSTAND, "receive_error", self._problem)
        return self.incoming.finish()

    def abandon(self) -> None:
        if self.incoming is not None:
            self.incoming.abandon()

    def close(self) -> None:
        """Called by pynetdicom after the handler; the store is already settled."""
