"""The whole system on one machine, every piece a real process: what `make demo` and the
end-to-end tests start (one implementation for both).

    with CentralStack(work / "central") as central, \\
            TrailerStack(work / "trailer", central, bookings) as trailer:
        modality = SimulatedModality(trailer, work / "modality")
        result = modality.screen(modality.query_worklist()[0])

* :class:`CentralStack` (:mod:`.central`) — the data centre: its own Kafka broker,
  Orthanc as the PACS, a development CA with one trailer certificate
  (``trailerlink-ingest dev-ca``), a sealing key pair, the ingest and the fleet monitor.
* :class:`TrailerStack` (:mod:`.trailer`) — the trailer: its own Kafka broker, dcmtk
  ``wlmscpfs`` as the Trust's worklist broker holding this site's synthetic clinic day,
  then the worklist, gateway, codec, uplink and the monitor agent.
* :class:`SimulatedModality` (:mod:`.modality`) — the mammography machine: dcmtk
  ``findscu`` for the worklist, pynetdicom MPPS, dcmtk ``storescu`` for the 4 views,
  pynetdicom storage commitment (a listener takes the N-EVENT-REPORT on a new
  association). For the bad-day tests it also sends files' bytes as they are (corrupt
  data sets) and aborts an association mid-study; every C-STORE Success it ever got is
  booked per SOP UID in ``acknowledged``: those images must reach PACS, whatever became
  of their attempt.

The rest: :mod:`.clinic` (the synthetic clinic day), :mod:`.processes` (a service as a
process or container), :mod:`.site` (start/stop bookkeeping both sites share),
:mod:`.logscan` (patient data in logs), :mod:`.names` (AE titles, ids, UIDs).

Synthetic data only: TEST^ names, NHS numbers from the 999 test range. Every service's
log goes to ``<stack dir>/logs/<service>.log`` (the tests scan them for patient data).
Importers use ``trailerlink_testing.stack``: every name below is re-exported here.
"""

from trailerlink_testing.stack.central import CentralStack
from trailerlink_testing.stack.clinic import Booking, synthetic_day
from trailerlink_testing.stack.logscan import booking_secrets, scan_logs_for
from trailerlink_testing.stack.modality import (
    SimulatedModality,
    StudyResult,
    dataset_sha256,
    parse_storescu,
)
from trailerlink_testing.stack.names import (
    CANARY_AE,
    COMMITMENT_INSTANCE,
    EXPLICIT_LE,
    GATEWAY_AE,
    MG,
    MODALITY_AE,
    PACS_AE,
    SITE_CODE,
    TRAILER_ID,
    UPSTREAM_AE,
    WORKLIST_AE,
    unique_id,
)
from trailerlink_testing.stack.processes import Service, restart_all
from trailerlink_testing.stack.trailer import TrailerStack

__all__ = [
    "CANARY_AE",
    "COMMITMENT_INSTANCE",
    "EXPLICIT_LE",
    "GATEWAY_AE",
    "MG",
    "MODALITY_AE",
    "PACS_AE",
    "SITE_CODE",
    "TRAILER_ID",
    "UPSTREAM_AE",
    "WORKLIST_AE",
    "Booking",
    "CentralStack",
    "Service",
    "SimulatedModality",
    "StudyResult",
    "TrailerStack",
    "booking_secrets",
    "dataset_sha256",
    "parse_storescu",
    "restart_all",
    "scan_logs_for",
    "synthetic_day",
    "unique_id",
]
