"""Synthetic mammography test data: pixel arrays and DICOM Part 10 files.

Nothing here comes from a real patient. Every dataset is named ``TEST^SYNTHETIC`` with
an obviously fake patient id, and the images are drawn from a seeded random model of a
compressed breast (background, skin line, tissue texture, pectoral muscle, noise), so
the compression ratio behaves like a mammogram's rather than like white noise or a
flat field.

Used by the sealed-format tests, the codec service tests and ``benchmarks/bench_codec``.
:func:`write_mg_file` streams frames to disk, so a 500 MB tomosynthesis object can be
made without holding it in memory.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

MG_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
MG_FOR_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.2.1")
BREAST_TOMOSYNTHESIS = UID("1.2.840.10008.5.1.4.1.1.13.1.3")
SYNTHETIC_PATIENT_NAME = "TEST^SYNTHETIC"
SYNTHETIC_PATIENT_ID = "SYNTHETIC-0001"
_PRIVATE_CREATOR = "TRAILERLINK SYNTHETIC"

# Detector sizes (rows, columns) of the common FFDM systems, smallest to largest.
DETECTOR_SIZES: dict[str, tuple[int, int]] = {
    "ge": (3062, 2394),
    "hologic": (4096, 3328),
    "siemens": (4096, 3328),
    "fuji": (5928, 4728),
}


def _smooth_field(rng: np.random.Generator, rows: int, cols: int, cell: int) -> np.ndarray:
    """Smooth random field, roughly in [-1, 1]: coarse noise upsampled bilinearly
    (separably: first along rows on the small grid, then along columns)."""
    gr, gc = rows // cell + 2, cols // cell + 2
    coarse = rng.standard_normal((gr, gc)).astype(np.float32)
    y = np.linspace(0, gr - 1.001, rows, dtype=np.float32)
    x = np.linspace(0, gc - 1.001, cols, dtype=np.float32)
    y0, x0 = y.astype(np.int32), x.astype(np.int32)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    tall = coarse[y0] * (1 - fy) + coarse[y0 + 1] * fy  # (rows, gc)
    out = tall[:, x0] * (1 - fx)
    out += tall[:, x0 + 1] * fx
    out *= 0.5
    return out


def synthetic_mammogram(
    rows: int,
    cols: int,
    bits_stored: int = 14,
    seed: int = 0,
    *,
    mlo: bool = True,
    noise: float = 1.0,
) -> np.ndarray:
    """A ``(rows, cols)`` uint16 image of a compressed breast, values < 2**bits_stored.

    MONOCHROME2 "for presentation" look: dark, nearly flat background; breast brighter,
    falling off towards the skin line; fibroglandular texture at several scales;
    pectoral muscle in the top corner for an MLO view; signal-dependent noise
    (``noise`` scales it: 0 gives a noise-free image).
    """
    rng = np.random.default_rng(seed)
    top = float(2**bits_stored - 1)
    yy = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :]
    # Breast: a half ellipse against the chest wall (x = 0), slightly off-centre.
    ry, rx = 0.82 + 0.1 * rng.random(), 0.72 + 0.2 * rng.random()
    cy = float(rng.uniform(-0.08, 0.08))
    r2 = ((yy - cy) / ry) ** 2 + (xx / rx) ** 2
    inside = r2 < 1.0
    thickness = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))  # falls off at the skin line
    thickness = np.minimum(thickness * 3.0, 1.0)
    texture = (
        0.55 * _smooth_field(rng, rows, cols, 256)
        + 0.30 * _smooth_field(rng, rows, cols, 48)
        + 0.15 * _smooth_field(rng, rows, cols, 9)
    )
    dense = np.clip(0.5 + 0.8 * texture, 0.0, 1.0) * (1.0 - 0.5 * xx)
    signal = (0.18 + 0.22 * thickness + 0.35 * dense * thickness) * top
    if mlo:
        pectoral = (xx * 1.6 + (yy + 1.0) * 0.5) < 0.55
        signal = np.where(pectoral & inside, signal + 0.18 * top, signal)
    background = 0.02 * top
    image = np.where(inside, signal, background).astype(np.float32)
    if noise > 0:
        # Quantum noise grows with the square root of the signal; the background
        # keeps a little electronic noise.
        sigma = noise * (0.6 + 0.05 * np.sqrt(image))
        image += rng.standard_normal(image.shape, dtype=np.float32) * sigma
    # A few microcalcifications: small bright specks.
    for _ in range(12):
        y, x = int(rng.integers(0, rows)), int(rng.integers(0, max(1, cols // 2)))
        image[y : y + 3, x : x + 3] += 0.2 * top
    # A burned-in laterality marker, as modalities print one in the background.
    my, mx = rows // 20, cols - cols // 8
    image[my : my + rows // 40, mx : mx + cols // 30] = 0.9 * top
    return np.clip(np.rint(image), 0, top).astype(np.uint16)


@dataclass
class MGSpec:
    """What a synthetic MG object looks like. Defaults: a small 14-bit 2D image."""

    rows: int = 256
    cols: int = 192
    bits_stored: int = 14
    bits_allocated: int = 16
    frames: int = 1
    samples: int = 1
    signed: bool = False
    photometric: str = "MONOCHROME2"
    high_bit: int | None = None
    high_bit_garbage: bool = False
    transfer_syntax: str = ExplicitVRLittleEndian
    private_after_pixels: bool = False
    odd_length_text: bool = True
    seed: int = 0
    sop_class: str = ""
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    sop_uid: str = field(default_factory=generate_uid)

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.cols * self.samples * self.bits_allocated // 8


@functools.lru_cache(maxsize=2)
def _base_image(rows: int, cols: int, bits: int, seed: int) -> np.ndarray:
    image = synthetic_mammogram(rows, cols, bits, seed)
    image.setflags(write=False)
    return image


def _projection(spec: MGSpec, index: int) -> np.ndarray:
    """Frame ``index`` of a multi-frame object: like tomosynthesis projections, each
    is the same breast seen from a slightly different angle, with its own noise."""
    base = _base_image(spec.rows, spec.cols, spec.bits_stored, spec.seed)
    image = np.roll(base, index * 3, axis=1).astype(np.int32)
    rng = np.random.default_rng(spec.seed * 7919 + index)
    image += rng.integers(-3, 4, size=image.shape, dtype=np.int32)
    return np.clip(image, 0, 2**spec.bits_stored - 1).astype(np.uint16)


def frame_pixels(spec: MGSpec, index: int) -> np.ndarray:
    """Pixel words of frame ``index`` as stored (uint8/uint16/int16, native order)."""
    if spec.bits_allocated == 8:
        base = synthetic_mammogram(spec.rows, spec.cols, 8, spec.seed + index, mlo=index % 2 == 0)
        base = base.astype(np.uint8)
        if spec.samples == 3:
            base = np.stack([base, base // 2 + 20, 255 - base], axis=-1)
        return base
    if spec.frames > 1:
        image = _projection(spec, index)
    else:
        image = synthetic_mammogram(spec.rows, spec.cols, spec.bits_stored, spec.seed)
    if spec.photometric == "MONOCHROME1":
        image = (2**spec.bits_stored - 1) - image
    shift = (spec.high_bit if spec.high_bit is not None else spec.bits_stored - 1) - (
        spec.bits_stored - 1
    )
    words = image.astype(np.int32)
    if spec.signed:
        words -= 2 ** (spec.bits_stored - 1)
    words = words << shift
    out = words.astype(np.int16 if spec.signed else np.uint16)
    if spec.high_bit_garbage:
        rng = np.random.default_rng(spec.seed + 1000 + index)
        garbage_bits = 16 - spec.bits_stored - shift
        if garbage_bits > 0:
            # Overlay-like garbage: mostly zero with a few set regions and random bits.
            garbage = np.zeros(image.shape, dtype=np.uint16)
            garbage[: spec.rows // 8, : spec.cols // 4] = 1
            garbage |= (rng.random(image.shape) < 0.01).astype(np.uint16) * (2**garbage_bits - 1)
            top = garbage << (spec.bits_stored + shift)
            out = (out.view(np.uint16) | top).view(out.dtype)
    return out


def _dataset(spec: MGSpec) -> Dataset:
    sop_class = spec.sop_class or (BREAST_TOMOSYNTHESIS if spec.frames > 1 else MG_FOR_PRESENTATION)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(spec.sop_uid)
    meta.TransferSyntaxUID = UID(spec.transfer_syntax)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1459.1")
    meta.ImplementationVersionName = "TLSYNTH_1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = spec.sop_uid
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.Modality = "MG"
    ds.PatientName = SYNTHETIC_PATIENT_NAME
    ds.PatientID = SYNTHETIC_PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = "20250101"
    ds.Manufacturer = "TRAILERLINK SYNTHETIC"
    # Odd-length values are padded by pydicom; this one exercises the padding byte.
    ds.ImageComments = "SYNTHETIC TEST IMAGE" + (" X" if spec.odd_length_text else "")
    ds.ViewPosition = "MLO"
    ds.ImageLaterality = "L"
    ds.SamplesPerPixel = spec.samples
    ds.PhotometricInterpretation = spec.photometric
    if spec.samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = spec.rows
    ds.Columns = spec.cols
    ds.BitsAllocated = spec.bits_allocated
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.high_bit if spec.high_bit is not None else spec.bits_stored - 1
    ds.PixelRepresentation = 1 if spec.signed else 0
    if spec.frames > 1:
        ds.NumberOfFrames = spec.frames
    # A small sequence before the pixel data, as real MG objects carry.
    item = Dataset()
    item.CodeValue = "399162004"
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = "cranio-caudal"
    ds.ViewCodeSequence = [item]
    block = ds.private_block(0x0009, _PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", "before pixels")
    return ds


def _encoding(transfer_syntax: str) -> tuple[bool, bool]:
    """(implicit VR, little endian) of an uncompressed transfer syntax."""
    if transfer_syntax == ImplicitVRLittleEndian:
        return True, True
    if transfer_syntax == ExplicitVRBigEndian:
        return False, False
    return False, True


def _element_header(tag: int, vr: str, length: int, implicit: bool, little: bool) -> bytes:
    e = "<" if little else ">"
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack(e + "HHI", group, elem, length)
    return struct.pack(e + "HH", group, elem) + vr.encode() + struct.pack(e + "HI", 0, length)


def _private_tail(implicit: bool, little: bool) -> bytes:
    """Private elements after the pixel data (some modalities put vendor data there)."""
    e = "<" if little else ">"
    creator = _PRIVATE_CREATOR.encode() + b" "  # padded to even length
    blob = bytes(range(256)) * 3
    out = bytearray()
    if implicit:
        out += struct.pack(e + "HHI", 0x7FE1, 0x0010, len(creator)) + creator
        out += struct.pack(e + "HHI", 0x7FE1, 0x1001, len(blob)) + blob
    else:
        out += struct.pack(e + "HH", 0x7FE1, 0x0010) + b"LO" + struct.pack(e + "H", len(creator))
        out += creator
        out += struct.pack(e + "HH", 0x7FE1, 0x1001) + b"OB" + struct.pack(e + "HI", 0, len(blob))
        out += blob
    # Trailing Data Set Trailing Padding, as some writers add.
    if implicit:
        out += struct.pack(e + "HHI", 0xFFFC, 0xFFFC, 6) + b"\0" * 6
    else:
        out += struct.pack(e + "HH", 0xFFFC, 0xFFFC) + b"OB" + struct.pack(e + "HI", 0, 6)
        out += b"\0" * 6
    return bytes(out)


def _header_bytes(spec: MGSpec) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, _dataset(spec), enforce_file_format=True)
    return buf.getvalue()


def iter_mg_file(spec: MGSpec) -> Iterator[bytes]:
    """The Part 10 bytes of ``spec``'s object in pieces of about one frame."""
    implicit, little = _encoding(spec.transfer_syntax)
    yield _header_bytes(spec)
    value_length = spec.frame_bytes * spec.frames
    pad = value_length % 2
    vr = "OB" if spec.bits_allocated == 8 else "OW"
    yield _element_header(0x7FE00010, vr, value_length + pad, implicit, little)
    for index in range(spec.frames):
        pixels = frame_pixels(spec, index)
        if spec.bits_allocated == 16:
            pixels = pixels.astype(pixels.dtype.newbyteorder("<" if little else ">"))
        yield pixels.tobytes()
    if pad:
        yield b"\0"
    if spec.private_after_pixels:
        yield _private_tail(implicit, little)


def mg_file_bytes(spec: MGSpec) -> bytes:
    """The whole Part 10 file of ``spec`` (small objects: tests)."""
    return b"".join(iter_mg_file(spec))


def write_mg_file(path: Path, spec: MGSpec) -> int:
    """Write ``spec``'s object to ``path`` frame by frame; returns its size in bytes."""
    size = 0
    with open(path, "wb") as out:
        for piece in iter_mg_file(spec):
            out.write(piece)
            size += len(piece)
    return size


def encapsulated_file_bytes(spec: MGSpec, transfer_syntax: str) -> bytes:
    """``spec``'s object already compressed: JPEG-LS lossless (…4.80) or J2K lossless (…4.90).

    The pixel data is encapsulated (undefined length, one fragment per frame).
    """
    import imagecodecs
    from pydicom.encaps import encapsulate

    frames: list[bytes] = []
    for index in range(spec.frames):
        pixels = frame_pixels(spec, index)
        if spec.signed:
            pixels = pixels.view(np.uint16) & np.uint16(2**spec.bits_stored - 1)
        # bytes() of the bytes the encoders return is the same object, not a copy.
        if transfer_syntax == "1.2.840.10008.1.2.4.80":
            frames.append(bytes(imagecodecs.jpegls_encode(pixels, level=0)))
        else:
            frames.append(
                bytes(
                    imagecodecs.jpeg2k_encode(
                        pixels, level=0, codecformat="j2k", bitspersample=spec.bits_stored
                    )
                )
            )
    encoded = MGSpec(**{**spec.__dict__, "transfer_syntax": transfer_syntax})
    ds = _dataset(encoded)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
