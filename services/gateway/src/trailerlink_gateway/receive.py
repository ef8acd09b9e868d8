"""Stream C-STORE data sets into the encrypted spool as their PDUs arrive.

:func:`trailerlink_dicomnet.route_datasets` hands each incoming C-STORE data set of the
gateway's AE to a :class:`SpoolSink` instead of pynetdicom's plaintext temporary file:
a file-like object that ignores pynetdicom's three header writes (preamble, ``DICM``,
file meta) and feeds every data set fragment straight into an
:class:`~trailerlink_gateway.intake.IncomingObject` (hash, encrypt, walk).

The sink is strict about what it expects from pynetdicom (the tests pin it): if the
write sequence ever differs, the store is refused, never stored wrongly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pynetdicom.association import Association
from trailerlink_dicomnet import IncomingDataset

from trailerlink_gateway.intake import IncomingObject, StoreRequest, StoreResult
from trailerlink_gateway.statuses import CANNOT_UNDERSTAND

Begin = Callable[[StoreRequest], IncomingObject]

_lock = threading.Lock()
_open_sinks: dict[int, set[SpoolSink]] = {}
_PREAMBLE = b"\x00" * 128


def sink_factory(begin: Begin) -> Callable[[Association, IncomingDataset | None], SpoolSink]:
    """What :func:`~trailerlink_dicomnet.route_datasets` calls for each data set."""

    def open_sink(assoc: Association, incoming: IncomingDataset | None) -> SpoolSink:
        sink = SpoolSink(assoc, begin, incoming)
        with _lock:
            _open_sinks.setdefault(id(assoc), set()).add(sink)
        return sink

    return open_sink


def abandon_open(assoc: Association) -> int:
    """The association ended: drop every store still being received on it."""
    with _lock:
        sinks = _open_sinks.pop(id(assoc), set())
    for sink in sinks:
        sink.abandon()
    return len(sinks)


class SpoolSink:
    """What pynetdicom takes for its temporary data set file."""

    def __init__(self, assoc: Association, begin: Begin, incoming: IncomingDataset | None) -> None:
        self._assoc = assoc
        self._writes = 0
        self._problem = ""
        # pynetdicom unlinks ``name`` after the handler: a path that never exists.
        self.name = f"/nonexistent/trailerlink-sink-{id(self):x}"
        self.incoming: IncomingObject | None = None
        self.opened_ns = time.time_ns()  # the store's span starts with its first PDU
        if incoming is None:
            self._problem = "unexpected receive state (command set)"
            return
        self.incoming = begin(
            StoreRequest(
                sop_class_uid=incoming.sop_class_uid,
                sop_instance_uid=incoming.sop_instance_uid,
                transfer_syntax_uid=incoming.transfer_syntax_uid,
                calling_ae_title=incoming.calling_ae_title,
                priority=incoming.priority,
            )
        )

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
