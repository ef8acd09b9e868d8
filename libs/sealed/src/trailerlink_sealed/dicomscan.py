"""A forward-only scan of a DICOM Part 10 stream up to its top-level Pixel Data.

The sealer needs three things from the header: where the File Meta Information ends
(the dataset hash starts there), the image attributes that say how to cut the pixel
data into frames, and where the Pixel Data value starts. It does not need a parsed
dataset, and it must not hold the object in memory, so this is a small element walker
over :class:`~trailerlink_sealed.stream.ByteStream` rather than ``pydicom.dcmread``.

It reads every element header (explicit or implicit VR, little or big endian, nested
sequences of defined or undefined length) and the values of a handful of Image Pixel
attributes; other values are read through without being interpreted. Anything it
cannot walk raises :class:`ScanError`; the sealer then compresses the object with zstd
as opaque bytes, which is always lossless.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from trailerlink_sealed.stream import ByteStream, UnexpectedEnd

PIXEL_DATA = 0x7FE00010
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
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
_MAX_NESTING = 32
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


class _Walker:
    def __init__(self, stream: ByteStream, limit: int) -> None:
        self.s = stream
        self.limit = limit

    def _check_limit(self) -> None:
        if self.s.capture_size() > self.limit:
            raise ScanError(f"header before the pixel data is larger than {self.limit} bytes")

    def _skip(self, length: int) -> None:
        while length > 0:
            self._check_limit()
            piece = self.s.read_exact(min(length, _SKIP_PIECE))
            length -= len(piece)

    def _tag(self, little: bool) -> int:
        group, element = struct.unpack("<HH" if little else ">HH", self.s.read_exact(4))
        return (group << 16) | element

    def _vr_and_length(self, tag: int, implicit: bool, little: bool) -> tuple[bytes, int]:
        e = "<" if little else ">"
        if implicit or (tag >> 16) == 0xFFFE:
            return b"", struct.unpack(e + "I", self.s.read_exact(4))[0]
        vr = bytes(self.s.read_exact(2))
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise ScanError(f"invalid VR bytes at offset {self.s.position - 2}")
        if vr in _LONG_VRS:
            self.s.read_exact(2)
            return vr, struct.unpack(e + "I", self.s.read_exact(4))[0]
        return vr, struct.unpack(e + "H", self.s.read_exact(2))[0]

    def file_meta(self, result: ScanResult) -> None:
        """Walk group 0002 (always explicit VR little endian)."""
        self.s.read_exact(132)
        while True:
            head = self.s.peek(2)
            if len(head) < 2 or struct.unpack("<H", head)[0] != 0x0002:
                break
            tag = self._tag(True)
            _vr, length = self._vr_and_length(tag, False, True)
            if length == UNDEFINED:
                raise ScanError("undefined length in the file meta information")
            if tag == 0x00020010:
                if length > 256:
                    raise ScanError("transfer syntax UID too long")
                value = self.s.read_exact(length)
                result.transfer_syntax = value.rstrip(b"\0 ").decode("ascii", "replace")
            else:
                self._skip(length)
        if not result.transfer_syntax:
            raise ScanError("no transfer syntax in the file meta information")

    def nested(self, implicit: bool, little: bool, depth: int) -> None:
        """Items of an undefined-length sequence, up to and including its delimiter."""
        if depth > _MAX_NESTING:
            raise ScanError("sequences nested too deeply")
        while True:
            self._check_limit()
            tag = self._tag(little)
            _, length = self._vr_and_length(tag, True, little)
            if tag == SEQUENCE_DELIMITER:
                return
            if tag != ITEM:
                raise ScanError(f"expected an item in a sequence at offset {self.s.position}")
            if length == UNDEFINED:
                self.elements(implicit, little, depth + 1, until_item_end=True)
            else:
                self._skip(length)

    def elements(
        self,
        implicit: bool,
        little: bool,
        depth: int,
        until_item_end: bool = False,
        result: ScanResult | None = None,
    ) -> None:
        """Walk elements; at top level (``result`` given) stop at Pixel Data."""
        e = "<" if little else ">"
        while True:
            self._check_limit()
            if result is not None and self.s.at_end():
                result.no_pixels_reason = "no pixel data"
                return
            tag = self._tag(little)
            if until_item_end and tag == ITEM_DELIMITER:
                self._vr_and_length(tag, True, little)
                return
            vr, length = self._vr_and_length(tag, implicit, little)
            if result is not None and tag == PIXEL_DATA:
                result.pixel_value_offset = self.s.position
                result.pixel_value_length = None if length == UNDEFINED else length
                result.pixel_vr = vr.decode("ascii") if vr else ""
                return
            if result is not None and tag > PIXEL_DATA:
                # Past where Pixel Data would be: this object has none at top level.
                result.no_pixels_reason = "no pixel data"
                return
            if (tag >> 16) == 0xFFFE:
                raise ScanError(f"item or delimiter out of place at offset {self.s.position}")
            if length == UNDEFINED:
                # SQ, or UN of undefined length, whose content is implicit VR LE.
                self.nested(implicit or vr == b"UN", little if vr != b"UN" else True, depth)
                continue
            if result is not None and tag in _US_ATTRIBUTES and length >= 2:
                value = self.s.read_exact(length)
                setattr(
                    result.attributes, _US_ATTRIBUTES[tag], struct.unpack(e + "H", value[:2])[0]
                )
            elif result is not None and tag in _TEXT_ATTRIBUTES and length <= 128:
                value = self.s.read_exact(length)
                text = value.rstrip(b"\0 ").lstrip(b" ").decode("ascii", "replace")
                setattr(result.attributes, _TEXT_ATTRIBUTES[tag], text)
            else:
                self._skip(length)


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
    walker = _Walker(stream, header_limit)
    if not is_part10(stream):
        raise ScanError("not a DICOM Part 10 file")
    try:
        walker.file_meta(result)
        stream.mark_dataset_start()
        result.dataset_offset = stream.position
        ts = result.transfer_syntax
        if ts in DEFLATED:
            result.no_pixels_reason = "deflated transfer syntax"
            return result
        result.implicit_vr = ts == IMPLICIT_VR_LE
        result.little_endian = ts != EXPLICIT_VR_BE
        walker.elements(result.implicit_vr, result.little_endian, 0, result=result)
    except ScanError:
        raise
    except UnexpectedEnd as exc:
        raise ScanError(f"truncated: {exc}") from None
    except (struct.error, ValueError, TypeError, IndexError) as exc:
        raise ScanError(f"malformed element: {type(exc).__name__}") from None
    return result
