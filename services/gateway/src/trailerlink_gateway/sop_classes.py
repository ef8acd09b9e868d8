"""What the gateway accepts: storage SOP classes and transfer syntaxes.

Everything is accepted and stored in the transfer syntax the modality proposed:
the gateway never transcodes, so compressed objects stay exactly as sent.
"""

from __future__ import annotations

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import sop_class as sc

# Keywords of the storage SOP classes accepted (each the metric label of its class).
_STORAGE_KEYWORDS: tuple[str, ...] = (
    # Mammography and tomosynthesis
    "DigitalMammographyXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForProcessing",
    "BreastTomosynthesisImageStorage",
    "BreastProjectionXRayImageStorageForPresentation",
    "BreastProjectionXRayImageStorageForProcessing",
    # Other projection X-ray a breast unit may send (specimen radiographs, QA)
    "DigitalXRayImageStorageForPresentation",
    "DigitalXRayImageStorageForProcessing",
    "ComputedRadiographyImageStorage",
    # Structured reports, key objects, presentation states
    "MammographyCADSRStorage",
    "BasicTextSRStorage",
    "EnhancedSRStorage",
    "ComprehensiveSRStorage",
    "Comprehensive3DSRStorage",
    "XRayRadiationDoseSRStorage",
    "KeyObjectSelectionDocumentStorage",
    "GrayscaleSoftcopyPresentationStateStorage",
    # Secondary capture and documents
    "SecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "EncapsulatedPDFStorage",
)

# Keyword -> SOP Class UID. pynetdicom creates its SOP class names at import time,
# so they are looked up by keyword rather than imported (a type checker sees none).
STORAGE_SOP_CLASSES: dict[str, str] = {kw: getattr(sc, kw) for kw in _STORAGE_KEYWORDS}

KEYWORD_BY_UID: dict[str, str] = {uid: kw for kw, uid in STORAGE_SOP_CLASSES.items()}

TRANSFER_SYNTAXES: list[str] = [
    # uncompressed and deflated
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    # lossless compressed
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    RLELossless,
    # lossy compressed
    JPEGLSNearLossless,
    JPEG2000,
    HTJ2K,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
]


def sop_class_label(uid: str) -> str:
    """The metric label of a SOP class ("other" for anything unexpected)."""
    return KEYWORD_BY_UID.get(uid, "other")
