"""A forward-only scan of a DICOM Part 10 stream up to its top-level Pixel Data.

The sealer needs three things from the header: where the File Meta Information ends
(the dataset hash starts there), the image attributes that say how to cut the pixel
data into frames, and where the Pixel Data value starts. It does not need a parsed
dataset, and it must not hold the object in memory, so this drives the shared element
walk (:mod:`trailerlink_common.dicomwalk`) over
:class:`~trailerlink_sealed.stream.ByteStream` rather than calling ``pydicom.dcmread``.

The walk is lenient here (``strict=False``): the sealer keeps the bytes whatever they
mean, so it follows anything it can find elements in (explicit or implicit VR, little
or big endian, nested sequences of defined or undefined length) and reads the values of
a handful of Image Pixel attributes. Anything it cannot walk raises :class:`ScanError`;
the sealer then compresses the object with zstd as opaque bytes, which is always
lossless.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from trailerlink_common.dicomwalk import (
    ITEM,
    ITEM_DELIMITER,
    NO_STOP,
    PIXEL_DATA,
    SEQUENCE_DELIMITER,
    TOP_BOUNDARY,
    UNDEFINED,
    ElementWalk,
    MalformedDataset,
)

from trailerlink_sealed.stream import ByteStream, UnexpectedEnd

__all__ = [
    "ITEM",
    "ITEM_DELIMITER",
    "PIXEL_DATA",
    "SEQUENCE_DELIMITER",
    "UNDEFINED",
    "ImageAttributes",
    "ScanError",
    "ScanResult",
    "is_part10",
    "scan",
]

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")

_TRANSFER_SYNTAX = 0x00020010
_US_ATTRIBUTES = {
    0x00280002: "samples_per_pixel",
    0x00280006: "planar_configuration",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280100: "bits_allocated",
    0x00280101: "bits_stored",
    0x00280102: "high_bit",
    0x00280103: "pixel_representation",
}
_TEXT_ATTRIBUTES = {
    0x00280004: "photometric_interpretation",
    0x00280008: "number_of_frames",
    0x00080018: "sop_instance_uid",
}
# Values read from the top level, by (shortest, longest) length: a US value needs its
# first two bytes; longer text values are not the ones looked for.
_KEEP = {
    **dict.fromkeys(_US_ATTRIBUTES, (2, NO_STOP)),
    **dict.fromkeys(_TEXT_ATTRIBUTES, (0, 128)),
}
# 33 levels of undefined-length sequences are followed (the gateway refuses past 32).
_MAX_DEPTH = 33
_SKIP_PIECE = 1 << 20


class ScanError(ValueError):
    """The header cannot be walked (malformed, truncated or too large)."""


@dataclass
class ImageAttributes:
    """Image Pixel module values from the top level of the dataset (None: absent)."""

    samples_per_pixel: int | None = None
    planar_configuration: int | None = None
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    bits_stored: int | None = None
    high_bit: int | None = None
    pixel_representation: int | None = None
    photometric_interpretation: str | None = None
    number_of_frames: str | None = None
    sop_instance_uid: str | None = None


@dataclass
class ScanResult:
    """What the scan found. The stream stops at the Pixel Data value when there is one."""

    transfer_syntax: str = ""
    dataset_offset: int | None = None
    little_endian: bool = True
    implicit_vr: bool = False
    attributes: ImageAttributes = field(default_factory=ImageAttributes)
    pixel_value_offset: int | None = None
    pixel_value_length: int | None = None  # None: undefined length (encapsulated)
    pixel_vr: str = ""
    no_pixels_reason: str = ""

    @property
    def has_pixel_data(self) -> bool:
        return self.pixel_value_offset is not None


def _check_limit(stream: ByteStream, limit: int) -> None:
    if stream.capture_size() > limit:
        raise ScanError(f"header before the pixel data is larger than {limit} bytes")


def _skip(stream: ByteStream, length: int, limit: int) -> None:
    while length > 0:
        _check_limit(stream, limit)
        piece = stream.read_exact(min(length, _SKIP_PIECE))
        length -= len(piece)


def _drive(stream: ByteStream, walk: ElementWalk, limit: int, file_meta: bool = False) -> bool:
    """Feed ``walk`` from ``stream``: True when it stopped at its ``stop_at`` tag, False
    when the top level ended (the stream's end; for ``file_meta``, the end of group
    0002, which is left unread)."""
    steps = walk.steps
    request = next(steps)
    while True:
        if walk.boundary:
            if file_meta:
                # The header limit is checked at elements of the dataset only.
                if walk.boundary == TOP_BOUNDARY:
                    head = stream.peek(2)
                    if len(head) < 2 or struct.unpack("<H", head)[0] != 0x0002:
                        return False
            else:
                _check_limit(stream, limit)
                if walk.boundary == TOP_BOUNDARY and stream.at_end():
                    return False
        if request > 0:
            data = bytes(stream.read_exact(request))
        else:
            _skip(stream, -request, limit)
            data = b""
        try:
            request = steps.send(data)
        except StopIteration:
            return True


def _file_meta(stream: ByteStream, result: ScanResult, limit: int) -> None:
    """Walk group 0002 (always explicit VR little endian)."""
    stream.read_exact(132)
    walk = ElementWalk(
        implicit_vr=False,
        little_endian=True,
        strict=False,
        max_depth=0,
        keep={_TRANSFER_SYNTAX: (0, 256)},
    )
    try:
        _drive(stream, walk, limit, file_meta=True)
    except MalformedDataset as exc:
        # max_depth=0: an undefined length is refused here.
        raise ScanError(f"file meta information: {exc}") from None
    value = walk.values.get(_TRANSFER_SYNTAX, b"")
    result.transfer_syntax = value.rstrip(b"\0 ").decode("ascii", "replace")
    if not result.transfer_syntax:
        raise ScanError("no transfer syntax in the file meta information")


def _dataset(stream: ByteStream, result: ScanResult, limit: int) -> None:
    """Walk the dataset's top level up to its Pixel Data, or past where it would be."""
    walk = ElementWalk(
        implicit_vr=result.implicit_vr,
        little_endian=result.little_endian,
        strict=False,
        max_depth=_MAX_DEPTH,
        keep=_KEEP,
        stop_at=PIXEL_DATA,
    )
    stopped = _drive(stream, walk, limit)
    endian = "<" if result.little_endian else ">"
    for tag, value in walk.values.items():
        if tag in _US_ATTRIBUTES:
            setattr(
                result.attributes, _US_ATTRIBUTES[tag], struct.unpack(endian + "H", value[:2])[0]
            )
        else:
            text = value.rstrip(b"\0 ").lstrip(b" ").decode("ascii", "replace")
            setattr(result.attributes, _TEXT_ATTRIBUTES[tag], text)
    if stopped and walk.stopped_at is not None and walk.stopped_at[0] == PIXEL_DATA:
        _tag, vr, length = walk.stopped_at
        result.pixel_value_offset = stream.position
        result.pixel_value_length = None if length == UNDEFINED else length
        result.pixel_vr = vr.decode("ascii") if vr else ""
    else:
        # At the end, or past where Pixel Data would be: none at top level.
        result.no_pixels_reason = "no pixel data"


def is_part10(stream: ByteStream) -> bool:
    """True when the stream starts with a 128-byte preamble and ``DICM``."""
    head = stream.peek(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def scan(stream: ByteStream, header_limit: int = 16 * 1024 * 1024) -> ScanResult:
    """Walk a Part 10 stream to the start of its top-level Pixel Data value.

    Marks the dataset start on ``stream`` (so its dataset hash is right), fills in the
    image attributes, and leaves the stream at the first byte of the Pixel Data value
    — or wherever it stopped when there is none. ``header_limit`` bounds the bytes
    captured before the pixel data. Raises :class:`ScanError` when the stream is not
    Part 10 or cannot be walked; the bytes consumed so far are in the stream's capture.
    """
    result = ScanResult()
    if not is_part10(stream):
        raise ScanError("not a DICOM Part 10 file")
    try:
        _file_meta(stream, result, header_limit)
        stream.mark_dataset_start()
        result.dataset_offset = stream.position
        ts = result.transfer_syntax
        if ts in DEFLATED:
            result.no_pixels_reason = "deflated transfer syntax"
            return result
        result.implicit_vr = ts == IMPLICIT_VR_LE
        result.little_endian = ts != EXPLICIT_VR_BE
        _dataset(stream, result, header_limit)
    except ScanError:
        raise
    except MalformedDataset as exc:
        raise ScanError(str(exc)) from None
    except UnexpectedEnd as exc:
        raise ScanError(f"truncated: {exc}") from None
    except (struct.error, ValueError, TypeError, IndexError) as exc:
        raise ScanError(f"malformed element: {type(exc).__name__}") from None
    return result
