"""trailerlink's DICOM network layer: where the project carries bytes itself, and every
use of pynetdicom beyond its public API (see :mod:`trailerlink_dicomnet.assumptions`)."""

from trailerlink_dicomnet.assumptions import PynetdicomMismatch, check_pynetdicom
from trailerlink_dicomnet.datasets import (
    IncomingDataset,
    route_datasets,
    sink_of,
    unroute_datasets,
)
from trailerlink_dicomnet.limits import ReceiveLimits
from trailerlink_dicomnet.server import BoundedAssociationServer, start_bounded_server

__all__ = [
    "BoundedAssociationServer",
    "IncomingDataset",
    "PynetdicomMismatch",
    "ReceiveLimits",
    "check_pynetdicom",
    "route_datasets",
    "sink_of",
    "start_bounded_server",
    "unroute_datasets",
]
