"""The fixed identities of the one-machine system: the trailer's id and site code, every
AE title the sites and the modality use, the SOP class, transfer syntax and commitment
instance of the mammography images, the synthetic UID root, and ``unique_id``."""

from __future__ import annotations

import uuid

from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation

TRAILER_ID = "trailer-01"
SITE_CODE = "SITE-DEMO01"
MODALITY_AE = "MG1"
CANARY_AE = "TLCANARY"  # the monitor agent's synthetic canary (services/monitor README)
GATEWAY_AE = "TRAILERLINK"
WORKLIST_AE = "TRAILERLINK_MWL"
UPSTREAM_AE = "NBSS_MWL"
PACS_AE = "PACS"
MG = DigitalMammographyXRayImageStorageForPresentation
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def unique_id() -> str:
    return uuid.uuid4().hex[:8]
