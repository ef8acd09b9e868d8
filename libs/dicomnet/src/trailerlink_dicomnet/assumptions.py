"""What this library assumes of pynetdicom's internals, checked before anything uses them.

pynetdicom's public API (AE, events, SCU calls) cannot bound what a peer makes us read,
cannot wait on a socket instead of polling it, and can only spill a C-STORE data set to
a plaintext temporary file. So :mod:`trailerlink_dicomnet` subclasses a few of its
classes and hooks one module attribute. Each such reliance is listed here; the pinned
version is exact, and :func:`check_pynetdicom` refuses a service's start-up when the
installed pynetdicom differs in version or in any of these shapes, rather than letting
a store go wrong later. ``libs/dicomnet/tests/test_assumptions.py`` pins each one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pynetdicom
import pynetdicom.dimse_messages as dimse_messages
import pynetdicom.service_class as service_class
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.transport import AssociationServer, RequestHandler, ThreadedAssociationServer

PYNETDICOM_VERSION = "3.0.4"


class PynetdicomMismatch(RuntimeError):
    """The installed pynetdicom is not the one this library was written against."""


@dataclass(frozen=True)
class Assumption:
    """``owner.name`` exists and, when ``parameters`` is given, is a callable taking
    exactly those parameters (in order, ``self`` included for methods)."""

    owner: object
    name: str
    parameters: tuple[str, ...] | None
    why: str

    def problem(self) -> str | None:
        target = getattr(self.owner, self.name, None)
        label = f"{getattr(self.owner, '__name__', self.owner)}.{self.name}"
        if target is None:
            return f"{label} is missing"
        if self.parameters is None:
            return None
        try:
            found = tuple(inspect.signature(target).parameters)
        except (TypeError, ValueError):
            return f"{label} has no inspectable signature"
        if found != self.parameters:
            return f"{label}{found} is not {self.parameters}"
        return None


ASSUMPTIONS: tuple[Assumption, ...] = (
    Assumption(
        DULServiceProvider,
        "_read_pdu_data",
        ("self",),
        "the DUL reads one PDU per call when its socket is readable: replaced by "
        "the bounded reader",
    ),
    Assumption(
        DULServiceProvider,
        "_decode_pdu",
        ("self", "bytestream"),
        "decodes a PDU other than P-DATA-TF and triggers EVT_PDU_RECV",
    ),
    Assumption(
        DULServiceProvider,
        "run_reactor",
        ("self",),
        "sleeps _run_loop_delay when idle: the delay becomes a wait on the socket",
    ),
    Assumption(
        DULServiceProvider,
        "receive_pdu",
        ("self", "wait", "timeout"),
        "the association thread's wait for a primitive: ends early once the connection is gone",
    ),
    Assumption(
        DULServiceProvider,
        "send_pdu",
        ("self", "primitive"),
        "queues a primitive for the reactor: wakes the waiting reactor",
    ),
    Assumption(
        RequestHandler,
        "_create_association",
        ("self",),
        "builds the acceptor Association: ours uses the bounded DUL",
    ),
    Assumption(
        AssociationServer,
        "get_request",
        ("self",),
        "accepts (and for TLS handshakes) in the listening thread: ours only accepts",
    ),
    Assumption(
        ThreadedAssociationServer,
        "process_request",
        ("self", "request", "client_address"),
        "hands a connection to its thread: ours counts it per peer first",
    ),
    Assumption(
        Association,
        "set_socket",
        ("self", "socket"),
        "attaches the transport to assoc.dul: assoc.dul is replaced before it",
    ),
    Assumption(
        Association,
        "run_reactor",
        ("self",),
        "the association thread's body: its end frees the peer's slot",
    ),
    Assumption(
        DIMSEServiceProvider,
        "send_msg",
        ("self", "primitive", "context_id"),
        "encodes and sends a DIMSE message: per-association subclasses may send "
        "some messages faster",
    ),
    Assumption(
        dimse_messages,
        "NamedTemporaryFile",
        None,
        "where decode_msg opens a C-STORE data set's file in chunked mode: the "
        "sink hook takes this place while installed",
    ),
    Assumption(
        service_class,
        "encode",
        ("ds", "is_implicit_vr", "is_little_endian", "deflated"),
        "how the C-FIND service class encodes each identifier: the encoding reuse hook "
        "takes this place while enabled",
    ),
    Assumption(
        P_DATA_TF,
        "to_primitive",
        ("self",),
        "the state machine (DT-2, AR-6) turns a P-DATA-TF PDU into its primitive",
    ),
)


# Instance attributes relied on, checked on a fresh acceptor: (path, why).
INSTANCE_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("dul._recv_pdu", "the queue the state machine takes a received PDU from"),
    ("dul.event_queue", "the state machine's events (Evt10, Evt17 ...)"),
    ("dul.to_provider_queue", "primitives waiting to be sent: the idle wait checks it"),
    ("dul.state_machine.current_state", "Sta1-Sta13: whether the peer is accepted"),
    ("_accepted_cx", "the accepted presentation contexts by id"),
    ("ae._servers", "the AE's running servers: a started server is added to it"),
)


def _instance_problems() -> list[str]:
    from pynetdicom import AE

    assoc = Association(AE(), "acceptor")
    problems = []
    for path, _why in INSTANCE_ATTRIBUTES:
        target: object = assoc
        for part in path.split("."):
            if not hasattr(target, part):
                problems.append(f"Association.{path} is missing")
                break
            target = getattr(target, part)
    return problems


def check_pynetdicom() -> None:
    """Refuse to run on a pynetdicom this library was not written against."""
    problems = []
    if pynetdicom.__version__ != PYNETDICOM_VERSION:
        problems.append(
            f"pynetdicom {pynetdicom.__version__} installed, {PYNETDICOM_VERSION} required"
        )
    problems += [p for a in ASSUMPTIONS if (p := a.problem()) is not None]
    problems += _instance_problems()
    if problems:
        raise PynetdicomMismatch("; ".join(problems))
