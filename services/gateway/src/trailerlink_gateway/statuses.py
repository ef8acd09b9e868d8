"""DICOM status codes and reasons the gateway uses, by name (PS3.4, PS3.7, PS3.8)."""

from __future__ import annotations

import enum

# --- DIMSE status (0000,0900) ---------------------------------------------------------
SUCCESS = 0x0000
# C-STORE (PS3.4 Annex B.2.3)
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
# DIMSE-N (PS3.7 Annex C)
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_SUCH_ACTION = 0x0123


# --- Storage commitment Failure Reason (0008,1197), PS3.3 C.14.1.1 ------------------------
class CommitFailure(enum.IntEnum):
    PROCESSING_FAILURE = 0x0110
    """A general failure: the object is not (or not safely) in the PACS."""
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    """The gateway never received this instance."""
    RESOURCE_LIMITATION = 0x0213
    """Not yet confirmed in the PACS by the deadline; a later request may succeed."""
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    CLASS_INSTANCE_CONFLICT = 0x0119
    """The instance was received under another SOP class."""


# --- Storage commitment N-EVENT-REPORT Event Type ID ----------------------------------------
COMMIT_EVENT_ALL_SUCCESS = 1
COMMIT_EVENT_SOME_FAILED = 2
COMMIT_ACTION_REQUEST = 1  # N-ACTION Action Type ID "Request Storage Commitment"


# --- A-ASSOCIATE-RJ (PS3.8 9.3.4) --------------------------------------------------------
class Reject(enum.Enum):
    """(result, source, diagnostic) of an association rejection, with a metric name."""

    CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
    CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)
    ADDRESS_NOT_PERMITTED = (0x01, 0x01, 0x01)  # permanent, service-user, no reason given
    TOO_MANY_ASSOCIATIONS = (0x02, 0x03, 0x02)  # transient, local limit exceeded

    @property
    def metric(self) -> str:
        return self.name.lower()
