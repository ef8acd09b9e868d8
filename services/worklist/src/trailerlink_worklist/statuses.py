"""DICOM status codes the worklist uses, by name (PS3.4 K.4.1.1.4, F.7.2; PS3.7 C)."""

from __future__ import annotations

SUCCESS = 0x0000
# C-FIND (Modality Worklist, PS3.4 K.4.1.1.4)
PENDING = 0xFF00
PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
# DIMSE-N (PS3.7 C) for MPPS N-CREATE / N-SET / N-GET
NO_SUCH_ATTRIBUTE = 0x0105
ATTRIBUTE_LIST_ERROR = 0x0107
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
# Error ID (0000,0902... carried in 0000,0903) for "may no longer be updated" (PS3.4 F.7.2.2.2)
ERROR_ID_MAY_NO_LONGER_BE_UPDATED = 0xA710

NAMES = {
    SUCCESS: "success",
    PENDING: "pending",
    CANCEL: "cancel",
    OUT_OF_RESOURCES: "out_of_resources",
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: "identifier_does_not_match_sop_class",
    UNABLE_TO_PROCESS: "unable_to_process",
    NO_SUCH_ATTRIBUTE: "no_such_attribute",
    ATTRIBUTE_LIST_ERROR: "attribute_list_error",
    INVALID_ATTRIBUTE_VALUE: "invalid_attribute_value",
    PROCESSING_FAILURE: "processing_failure",
    DUPLICATE_SOP_INSTANCE: "duplicate_sop_instance",
    NO_SUCH_OBJECT_INSTANCE: "no_such_object_instance",
    MISSING_ATTRIBUTE: "missing_attribute",
    MISSING_ATTRIBUTE_VALUE: "missing_attribute_value",
}


def name(status: int) -> str:
    """A metric-safe name for ``status``."""
    return NAMES.get(status, f"status_{status:04x}")
