"""Hand an incoming C-STORE data set to the service as it arrives, never to a file.

pynetdicom can spill a C-STORE data set to a file instead of memory
(``_config.STORE_RECV_CHUNKED_DATASET``), but to a *plaintext* temporary file: patient
data in the clear on disk, left behind by a ``kill -9``. It opens that file through the
module attribute ``pynetdicom.dimse_messages.NamedTemporaryFile``, from the
association's DUL thread, then writes the preamble, ``DICM``, the file meta and each
data set fragment in turn.

While a service has AEs routed here (:func:`route_datasets`), that attribute is a
factory which, for associations of those AEs, returns what the service's sink factory
makes (a file-like object) for an :class:`IncomingDataset` (what the C-STORE request
and its presentation context say, read from pynetdicom's receive state here, so the
service needs none of it); other AEs get the real temporary file. The attribute and the
configuration flag are restored when the last AE is unrouted: nothing process-wide
outlives its use. In the C-STORE handler, :func:`sink_of` finds the sink again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pynetdicom.dimse_messages as _dimse_messages
from pynetdicom import _config
from pynetdicom.association import Association


@dataclass(frozen=True)
class IncomingDataset:
    """The C-STORE request whose data set is about to arrive."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae_title: str
    priority: int


# (association, the request, or None when pynetdicom's receive state was not as expected
# — the sink must then refuse the store) -> a file-like sink.
SinkFactory = Callable[[Association, IncomingDataset | None], Any]

_lock = threading.Lock()
_factories: dict[int, SinkFactory] = {}
_saved: tuple[Any, bool] | None = None  # (NamedTemporaryFile, STORE_RECV_CHUNKED_DATASET)


def route_datasets(ae: object, factory: SinkFactory) -> None:
    """Data sets received by ``ae``'s associations go to ``factory(assoc)``."""
    global _saved
    with _lock:
        if _saved is None:
            _saved = (_dimse_messages.NamedTemporaryFile, _config.STORE_RECV_CHUNKED_DATASET)
            _config.STORE_RECV_CHUNKED_DATASET = True
            _dimse_messages.NamedTemporaryFile = _sink_or_tempfile
        _factories[id(ae)] = factory


def unroute_datasets(ae: object) -> None:
    """Stop routing ``ae``; with no AE left, pynetdicom is as it was."""
    global _saved
    with _lock:
        _factories.pop(id(ae), None)
        if not _factories and _saved is not None:
            _dimse_messages.NamedTemporaryFile, _config.STORE_RECV_CHUNKED_DATASET = _saved
            _saved = None


def _sink_or_tempfile(*args: Any, **kwargs: Any) -> Any:
    assoc = getattr(threading.current_thread(), "assoc", None)
    factory = _factories.get(id(getattr(assoc, "ae", None))) if assoc is not None else None
    if factory is None:
        original = _saved[0] if _saved is not None else _dimse_messages.NamedTemporaryFile
        return original(*args, **kwargs)
    return factory(assoc, _incoming(assoc))  # type: ignore[arg-type]


def _incoming(assoc: Association) -> IncomingDataset | None:
    """The request being received on ``assoc``: decode_msg has just decoded its command
    set into ``assoc.dimse.message`` (the test module pins this)."""
    try:
        message = assoc.dimse.message
        command = message.command_set  # type: ignore[union-attr]
        context = assoc._accepted_cx[message.context_id]  # type: ignore[union-attr,index]
        return IncomingDataset(
            sop_class_uid=str(command.AffectedSOPClassUID or ""),
            sop_instance_uid=str(command.AffectedSOPInstanceUID or ""),
            transfer_syntax_uid=str(context.transfer_syntax[0]),
            calling_ae_title=str(assoc.requestor.ae_title).strip(),
            priority=int(command.Priority or 0),
        )
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return None


def sink_of(request: Any) -> Any | None:
    """The sink an EVT_C_STORE request's data set went to (None if it went nowhere)."""
    return getattr(request, "_dataset_file", None)
