"""The image codecs a frame record can use, behind one small interface.

JPEG-LS (ISO/IEC 14495-1, CharLS) is the default: on mammograms it gives the best
lossless ratio among the fast codecs (docs/sealed-format.md has the measurements).
It is encoded at the image's real precision (``bits_per_sample`` = the bits the values
use, at most Bits Stored), exactly as a PACS stores transfer syntax
1.2.840.10008.1.2.4.80, through CharLS's C API. imagecodecs ships CharLS as a shared
library but its Python wrapper always codes 8 or 16 bits; coding 14-bit data as 16
costs ratio, so the encoder calls ``libcharls`` directly (ctypes releases the GIL for
the call). Where that library cannot be loaded, imagecodecs' own encoder is used: the
codestream is still standard JPEG-LS, only slightly larger.

HTJ2K (ISO/IEC 15444-15, OpenJPH) is the fast alternative: a slightly lower ratio
than JPEG-LS, much faster (figures: docs/adr/0009).

Decoding always goes through imagecodecs, which reads any precision.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from enum import IntEnum

import imagecodecs
import numpy as np


class FrameCodec(IntEnum):
    """Codec ids as written in frame records (docs/sealed-format.md)."""

    JPEGLS = 1
    HTJ2K = 2


CODEC_NAMES = {FrameCodec.JPEGLS: "jpegls", FrameCodec.HTJ2K: "htj2k"}
CODECS_BY_NAME = {name: codec for codec, name in CODEC_NAMES.items()}


class CodecError(Exception):
    """A codec refused or failed on an image (the caller falls back to zstd)."""


# --- CharLS through ctypes -----------------------------------------------------------
class _FrameInfo(ctypes.Structure):
    _fields_ = (
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("bits_per_sample", ctypes.c_int32),
        ("component_count", ctypes.c_int32),
    )


class _PresetParameters(ctypes.Structure):
    _fields_ = (
        ("maximum_sample_value", ctypes.c_int32),
        ("threshold1", ctypes.c_int32),
        ("threshold2", ctypes.c_int32),
        ("threshold3", ctypes.c_int32),
        ("reset_value", ctypes.c_int32),
    )


_INTERLEAVE_NONE, _INTERLEAVE_SAMPLE = 0, 2
THRESHOLD_SCALES = (1.0, 0.5, 2.0)
"""Gradient-threshold scales tried per object (1.0: the standard's defaults)."""
_TUNING_MIN_ROWS = 256
_charls_lock = threading.Lock()
_charls: ctypes.CDLL | None = None
_charls_loaded = False


def _load_charls() -> ctypes.CDLL | None:
    """The libcharls that imagecodecs ships, with its C API typed; None if absent."""
    global _charls, _charls_loaded
    with _charls_lock:
        if _charls_loaded:
            return _charls
        _charls_loaded = True
        package = os.path.dirname(imagecodecs.__file__)
        candidates = sorted(
            glob.glob(os.path.join(package, os.pardir, "imagecodecs.libs", "libcharls*.so*"))
        )
        for path in candidates:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            vp, sz = ctypes.c_void_p, ctypes.c_size_t
            lib.charls_jpegls_encoder_create.restype = vp
            lib.charls_jpegls_encoder_create.argtypes = []
            lib.charls_jpegls_encoder_destroy.restype = None
            lib.charls_jpegls_encoder_destroy.argtypes = [vp]
            signatures = {
                "set_frame_info": [vp, ctypes.POINTER(_FrameInfo)],
                "set_near_lossless": [vp, ctypes.c_int32],
                "set_interleave_mode": [vp, ctypes.c_int],
                "set_preset_coding_parameters": [vp, ctypes.POINTER(_PresetParameters)],
                "get_estimated_destination_size": [vp, ctypes.POINTER(sz)],
                "set_destination_buffer": [vp, vp, sz],
                "encode_from_buffer": [vp, vp, sz, ctypes.c_uint32],
                "get_bytes_written": [vp, ctypes.POINTER(sz)],
            }
            for name, argtypes in signatures.items():
                func = getattr(lib, f"charls_jpegls_encoder_{name}")
                func.restype = ctypes.c_int
                func.argtypes = argtypes
            lib.charls_get_error_message.restype = ctypes.c_char_p
            lib.charls_get_error_message.argtypes = [ctypes.c_int]
            _charls = lib
            break
        return _charls


def charls_available() -> bool:
    """True when JPEG-LS is coded at the image's own precision (libcharls loaded)."""
    return _load_charls() is not None


def _charls_check(lib: ctypes.CDLL, code: int, what: str) -> None:
    if code != 0:
        message = lib.charls_get_error_message(code) or b"?"
        raise CodecError(f"CharLS {what}: {message.decode('ascii', 'replace')}")


def thresholds_for(bits: int, scale: float) -> tuple[int, int, int] | None:
    """JPEG-LS gradient thresholds T1..T3 for ``bits`` of precision, the standard's
    defaults (ISO/IEC 14495-1, C.2.4.1.1) scaled by ``scale``; None for the defaults."""
    if scale == 1.0 or bits < 9:
        return None
    maxval = (1 << bits) - 1
    factor = (min(maxval, 4095) + 128) >> 8
    defaults = (factor + 2, 4 * factor + 3, 17 * factor + 4)
    t1 = min(maxval, max(2, round(defaults[0] * scale)))
    t2 = min(maxval, max(t1, round(defaults[1] * scale)))
    t3 = min(maxval, max(t2, round(defaults[2] * scale)))
    return t1, t2, t3


def _jpegls_encode_charls(
    lib: ctypes.CDLL, image: np.ndarray, bits: int, planar: bool, scale: float = 1.0
) -> bytes:
    if planar:
        components, height, width = image.shape
        interleave, stride = _INTERLEAVE_NONE, width * image.itemsize
    elif image.ndim == 3:
        height, width, components = image.shape
        interleave, stride = _INTERLEAVE_SAMPLE, width * components * image.itemsize
    else:
        (height, width), components = image.shape, 1
        interleave, stride = _INTERLEAVE_NONE, width * image.itemsize
    encoder = lib.charls_jpegls_encoder_create()
    if not encoder:
        raise CodecError("CharLS: cannot create an encoder")
    try:
        info = _FrameInfo(width, height, bits, components)
        _charls_check(
            lib, lib.charls_jpegls_encoder_set_frame_info(encoder, ctypes.byref(info)), "frame info"
        )
        _charls_check(lib, lib.charls_jpegls_encoder_set_near_lossless(encoder, 0), "near")
        thresholds = thresholds_for(bits, scale)
        if thresholds is not None:
            # Written into the codestream (an LSE marker): any JPEG-LS decoder follows it.
            preset = _PresetParameters(0, *thresholds, 0)
            _charls_check(
                lib,
                lib.charls_jpegls_encoder_set_preset_coding_parameters(
                    encoder, ctypes.byref(preset)
                ),
                "preset parameters",
            )
        _charls_check(
            lib, lib.charls_jpegls_encoder_set_interleave_mode(encoder, interleave), "interleave"
        )
        size = ctypes.c_size_t()
        _charls_check(
            lib,
            lib.charls_jpegls_encoder_get_estimated_destination_size(encoder, ctypes.byref(size)),
            "destination size",
        )
        out = np.empty(size.value, dtype=np.uint8)
        _charls_check(
            lib,
            lib.charls_jpegls_encoder_set_destination_buffer(encoder, out.ctypes.data, out.nbytes),
            "destination",
        )
        _charls_check(
            lib,
            lib.charls_jpegls_encoder_encode_from_buffer(
                encoder, image.ctypes.data, image.nbytes, stride
            ),
            "encode",
        )
        written = ctypes.c_size_t()
        _charls_check(
            lib,
            lib.charls_jpegls_encoder_get_bytes_written(encoder, ctypes.byref(written)),
            "bytes written",
        )
        return out[: written.value].tobytes()
    finally:
        lib.charls_jpegls_encoder_destroy(encoder)


def precision_of(image: np.ndarray, bits_stored: int) -> int:
    """Bits the values really use (2..bits_stored): JPEG-LS codes that precision."""
    top = int(image.max()) if image.size else 0
    return max(2, min(bits_stored, top.bit_length()))


class Tuning:
    """Per-object encoder choices, made on the first frame and kept for the others.

    JPEG-LS codes prediction errors in contexts chosen by three gradient thresholds. The
    standard's defaults suit 8-bit photographs; 12-16-bit medical images often compress
    better with other values, and which ones depends on the noise. So the first frame's
    middle band is coded with each of :data:`THRESHOLD_SCALES` and the smallest wins:
    a little more encoding work for fewer bytes on mammograms (docs/adr/0009).
    (Band: 1/32 of the rows, at least 64; images under 256 rows keep the defaults.)
    """

    def __init__(self) -> None:
        self.threshold_scale: float | None = None


def _choose_scale(lib: ctypes.CDLL, image: np.ndarray, bits: int, planar: bool) -> float:
    rows = image.shape[1] if planar else image.shape[0]
    if bits < 9 or rows < _TUNING_MIN_ROWS:
        return 1.0
    band = max(64, rows // 32)
    start = (rows - band) // 2
    sample = image[:, start : start + band] if planar else image[start : start + band]
    sample = np.ascontiguousarray(sample)
    sizes = {
        scale: len(_jpegls_encode_charls(lib, sample, bits, planar, scale))
        for scale in THRESHOLD_SCALES
    }
    return min(THRESHOLD_SCALES, key=lambda scale: sizes[scale])


def encode(
    codec: FrameCodec,
    image: np.ndarray,
    bits: int,
    planar: bool = False,
    tuning: Tuning | None = None,
) -> bytes:
    """Encode ``image`` losslessly; ``image`` is unsigned with values < 2**bits.

    ``image`` is (rows, cols), (rows, cols, samples) or, when ``planar``,
    (samples, rows, cols). ``tuning`` carries choices from frame to frame of one
    object. Raises :class:`CodecError` when the codec refuses the image.
    """
    image = np.ascontiguousarray(image)
    try:
        if codec == FrameCodec.JPEGLS:
            if bits <= 8 and image.dtype != np.uint8:
                image = image.astype(np.uint8)
            lib = _load_charls()
            if lib is not None:
                scale = 1.0
                if tuning is not None:
                    if tuning.threshold_scale is None:
                        tuning.threshold_scale = _choose_scale(lib, image, bits, planar)
                    scale = tuning.threshold_scale
                return _jpegls_encode_charls(lib, image, bits, planar, scale)
            if planar:
                image = np.ascontiguousarray(np.moveaxis(image, 0, -1))
            return bytes(imagecodecs.jpegls_encode(image, level=0))
        if codec == FrameCodec.HTJ2K:
            if image.ndim == 3 and not planar:
                image = np.ascontiguousarray(np.moveaxis(image, -1, 0))
            return bytes(imagecodecs.htj2k_encode(image, planar=image.ndim == 3, reversible=True))
    except CodecError:
        raise
    except Exception as exc:  # the codec libraries raise their own error types
        raise CodecError(
            f"{CODEC_NAMES.get(codec, codec)} encode failed: {type(exc).__name__}"
        ) from None
    raise CodecError(f"unknown frame codec {codec}")


def _jpegls_dimensions(codestream: bytes) -> tuple[int, int, int]:
    """(rows, columns, components) from a JPEG-LS SOF55 marker segment."""
    at = codestream.find(b"\xff\xf7")
    if at < 0 or at + 10 > len(codestream):
        raise CodecError("JPEG-LS codestream without a frame header")
    rows = int.from_bytes(codestream[at + 5 : at + 7], "big")
    columns = int.from_bytes(codestream[at + 7 : at + 9], "big")
    return rows, columns, codestream[at + 9]


def _htj2k_dimensions(codestream: bytes) -> tuple[int, int, int]:
    """(rows, columns, components) from a J2C codestream's SIZ marker segment."""
    if codestream[:4] != b"\xff\x4f\xff\x51" or len(codestream) < 42:
        raise CodecError("HTJ2K codestream without SOC and SIZ")
    field = [int.from_bytes(codestream[8 + 4 * i : 12 + 4 * i], "big") for i in range(4)]
    xsiz, ysiz, xosiz, yosiz = field
    return ysiz - yosiz, xsiz - xosiz, int.from_bytes(codestream[40:42], "big")


def check_dimensions(
    codec: int, codestream: bytes | bytearray | memoryview, rows: int, columns: int, samples: int
) -> None:
    """Refuse a codestream whose header declares another size than its frame record,
    before a decoder allocates what a hostile header asks for."""
    head = bytes(codestream[:4096])
    if codec == FrameCodec.JPEGLS:
        found = _jpegls_dimensions(head)
    elif codec == FrameCodec.HTJ2K:
        found = _htj2k_dimensions(head)
    else:
        raise CodecError(f"unknown frame codec {codec}")
    if found != (rows, columns, samples):
        raise CodecError("codestream dimensions differ from the frame record")


def decode(codec: int, codestream: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode a codestream to (rows, cols) or (rows, cols, samples), unsigned.

    Raises :class:`CodecError` for an unknown codec or a corrupt codestream. Call
    :func:`check_dimensions` first on untrusted input.
    """
    # The decoders take any buffer; their stubs name only bytes, bytearray and mmap.
    try:
        if codec == FrameCodec.JPEGLS:
            return np.asarray(imagecodecs.jpegls_decode(codestream))  # type: ignore[arg-type]
        if codec == FrameCodec.HTJ2K:
            return np.asarray(
                imagecodecs.htj2k_decode(codestream, planar=False)  # type: ignore[arg-type]
            )
    except Exception as exc:
        raise CodecError(f"frame codestream does not decode: {type(exc).__name__}") from None
    raise CodecError(f"unknown frame codec {codec}")
