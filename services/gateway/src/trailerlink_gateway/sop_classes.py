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

# Keyword (used as the metric label) -> SOP Class UID.
STORAGE_SOP_CLASSES: dict[str, str] = {
    # Mammography and tomosynthesis
    "DigitalMammographyXRayImageStorageForPresentation":
        sc.DigitalMammographyXRayImageStorageForPresentation,
    "DigitalMammographyXRayImageStorageForProcessing":
        sc.DigitalMammographyXRayImageStorageForProcessing,
    "BreastTomosynthesisImageStorage": sc.BreastTomosynthesisImageStorage,
    "BreastProjectionXRayImageStorageForPresentation":
        sc.BreastProjectionXRayImageStorageForPresentation,
    "BreastProjectionXRayImageStorageForProcessing":
        sc.BreastProjectionXRayImageStorageForProcessing,
    # Other projection X-ray a breast unit may send (specimen radiographs, QA)
    "DigitalXRayImageStorageForPresentation": sc.DigitalXRayImageStorageForPresentation,
    "DigitalXRayImageStorageForProcessing": sc.DigitalXRayImageStorageForProcessing,
    "ComputedRadiographyImageStorage": sc.ComputedRadiographyImageStorage,
    # Structured reports, key objects, presentation states
    "MammographyCADSRStorage": sc.MammographyCADSRStorage,
    "BasicTextSRStorage": sc.BasicTextSRStorage,
    "EnhancedSRStorage": sc.EnhancedSRStorage,
    "ComprehensiveSRStorage": sc.ComprehensiveSRStorage,
    "Comprehensive3DSRStorage": sc.Comprehensive3DSRStorage,
    "XRayRadiationDoseSRStorage": sc.XRayRadiationDoseSRStorage,
    "KeyObjectSelectionDocumentStorage": sc.KeyObjectSelectionDocumentStorage,
    "GrayscaleSoftcopyPresentationStateStorage": sc.GrayscaleSoftcopyPresentationStateStorage,
    # Secondary capture and documents
    "SecondaryCaptureImageStorage": sc.SecondaryCaptureImageStorage,
    "MultiFrameSingleBitSecondaryCaptureImageStorage":
        sc.MultiFrameSingleBitSecondaryCaptureImageStorage,
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage":
        sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage":
        sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    "MultiFrameTrueColorSecondaryCaptureImageStorage":
        sc.MultiFrameTrueColorSecondaryCaptureImageStorage,
    "EncapsulatedPDFStorage": sc.EncapsulatedPDFStorage,
}

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
