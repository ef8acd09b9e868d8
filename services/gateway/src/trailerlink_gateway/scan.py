"""A streaming structural check of a DICOM dataset, fed as its bytes arrive.

The gateway never decodes and re-encodes what it stores, and must not hold a
tomosynthesis object in memory, so it cannot hand the dataset to pydicom. Instead
:class:`DatasetScanner` walks the element structure (tags, VRs, lengths, sequences,
items, encapsulated fragments) over the byte stream, skipping values, and keeps only
the few identifying values it needs. A dataset "parses" when the walk ends exactly at
an element boundary of the top level, with every sequence and item closed. Memory is
bounded by the largest identifying value (a UID), whatever the object's size.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Generator
from dataclasses import dataclass

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_KNOWN_VRS = _LONG_VRS | frozenset(
    {
        b"AE",
        b"AS",
        b"AT",
        b"CS",
        b"DA",
        b"DS",
        b"DT",
        b"FL",
        b"FD",
        b"IS",
        b"LO",
        b"LT",
        b"PN",
        b"SH",
        b"SL",
        b"SS",
        b"ST",
        b"TM",
        b"UI",
        b"UL",
        b"US",
    }
)
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_MAX_DEPTH = 32
_MAX_VALUE_KEPT = 1024

_WANTED = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
    0x00280008: "number_of_frames",
}

# A request from the walker to the feeder: n > 0 means "give me the next n bytes",
# n < 0 means "skip the next -n bytes".
_Walk = Generator[int, bytes, None]


class UnparseableDataset(ValueError):
    """The bytes are not a well-formed dataset. The message says why, without values."""


@dataclass(frozen=True)
class DatasetSummary:
    """The identity of a dataset (UIDs only)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    number_of_frames: int


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ").strip()


class DatasetScanner:
    """Feed the dataset bytes as received (:meth:`feed`), then :meth:`finish`."""

    def __init__(self, transfer_syntax_uid: str) -> None:
        self._implicit = transfer_syntax_uid == ImplicitVRLittleEndian
        self._endian = ">" if transfer_syntax_uid == ExplicitVRBigEndian else "<"
        self._inflater = (
            zlib.decompressobj(-zlib.MAX_WBITS)
            if transfer_syntax_uid == DeflatedExplicitVRLittleEndian
            else None
        )
        self._values: dict[str, str] = {}
        self._error = ""
        self._at_boundary = False
        self._buf = bytearray()
        self._walk = self._top_level()
        self._request = next(self._walk)

    @property
    def error(self) -> str:
        """Why the dataset does not parse ("" while it still might)."""
        return self._error

    def feed(self, data: bytes | memoryview) -> None:
        if self._error:
            return
        if self._inflater is not None:
            try:
                data = self._inflater.decompress(data)
            except zlib.error:
                self._fail("deflated data set does not inflate")
                return
            # Bytes after the end of the deflate stream (some writers pad or append a
            # checksum) are kept in the stored object but are not part of the dataset.
        self._consume(memoryview(data))

    def finish(self) -> DatasetSummary:
        """The dataset's identity; raises :class:`UnparseableDataset`."""
        if not self._error and self._inflater is not None:
            try:
                rest = self._inflater.flush()
            except zlib.error:
                self._fail("deflated data set does not inflate")
            else:
                self._consume(memoryview(rest))
                if not self._error and not self._inflater.eof:
                    self._fail("deflated data set is truncated")
        if self._error:
            raise UnparseableDataset(self._error)
        if not self._at_boundary or self._buf or self._request < 0:
            raise UnparseableDataset("data set ends inside an element")
        missing = [
            k
            for k in (
                "sop_class_uid",
                "sop_instance_uid",
                "study_instance_uid",
                "series_instance_uid",
            )
            if not self._values.get(k)
        ]
        if missing:
            raise UnparseableDataset("data set lacks " + ", ".join(missing))
        try:
            frames = int(self._values.get("number_of_frames") or "1")
        except ValueError:
            frames = 1
        return DatasetSummary(
            sop_class_uid=self._values["sop_class_uid"],
            sop_instance_uid=self._values["sop_instance_uid"],
            study_instance_uid=self._values["study_instance_uid"],
            series_instance_uid=self._values["series_instance_uid"],
            number_of_frames=max(frames, 1),
        )

    # --- feeding -----------------------------------------------------------------
    def _fail(self, why: str) -> None:
        if not self._error:
            self._error = why
        self._buf.clear()

    def _consume(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        while pos < end and not self._error:
            request = self._request
            if request < 0:
                take = min(-request, end - pos)
                pos += take
                if take == -request:
                    self._step(b"")
                else:
                    self._request = request + take
            else:
                take = min(request - len(self._buf), end - pos)
                self._buf += data[pos : pos + take]
                pos += take
                if len(self._buf) == request:
                    value = bytes(self._buf)
                    self._buf.clear()
                    self._step(value)

    def _step(self, value: bytes) -> None:
        try:
            self._request = self._walk.send(value)
        except UnparseableDataset as exc:
            self._fail(str(exc))
        except (struct.error, StopIteration):
            self._fail("data set structure is inconsistent")

    # --- walking -----------------------------------------------------------------
    def _top_level(self) -> _Walk:
        while True:
            self._at_boundary = True
            header = yield 8
            self._at_boundary = False
            yield from self._element(header, self._implicit, self._endian, depth=0)

    def _header(
        self, header: bytes, implicit: bool, endian: str
    ) -> Generator[int, bytes, tuple[int, bytes, int]]:
        """Complete an element header; the walker's return value is (tag, vr, length)."""
        group, element = struct.unpack(endian + "HH", header[:4])
        tag = group << 16 | element
        if group == 0xFFFE or implicit:
            (length,) = struct.unpack(endian + "I", header[4:8])
            return tag, b"", length
        vr = header[4:6]
        if vr not in _KNOWN_VRS:
            raise UnparseableDataset(f"unknown VR at ({group:04X},{element:04X})")
        if vr in _LONG_VRS:
            if header[6:8] != b"\x00\x00":
                raise UnparseableDataset(f"bad reserved bytes at ({group:04X},{element:04X})")
            (length,) = struct.unpack(endian + "I", (yield 4))
        else:
            (length,) = struct.unpack(endian + "H", header[6:8])
        return tag, vr, length

    def _element(self, header: bytes, implicit: bool, endian: str, depth: int) -> _Walk:
        tag, vr, length = yield from self._header(header, implicit, endian)
        if tag >> 16 == 0xFFFE:
            raise UnparseableDataset("item or delimiter outside a sequence")
        if length != _UNDEFINED:
            name = _WANTED.get(tag) if depth == 0 else None
            if name is not None and length <= _MAX_VALUE_KEPT:
                self._values[name] = _text((yield length)) if length else ""
            elif length:
                yield -length
            return
        if depth >= _MAX_DEPTH:
            raise UnparseableDataset("sequences nested too deeply")
        if vr == b"SQ" or (implicit and tag != _PIXEL_DATA):
            yield from self._sequence(implicit, endian, depth + 1)
        elif vr == b"UN":
            # An undefined-length UN holds an implicit VR little endian sequence.
            yield from self._sequence(True, "<", depth + 1)
        elif vr in (b"OB", b"OW") or (implicit and tag == _PIXEL_DATA):
            yield from self._fragments(endian)
        else:
            raise UnparseableDataset("undefined length on an element that cannot have one")

    def _sequence(self, implicit: bool, endian: str, depth: int) -> _Walk:
        while True:
            group, element, length = struct.unpack(endian + "HHI", (yield 8))
            tag = group << 16 | element
            if tag == _SEQUENCE_DELIMITER:
                return
            if tag != _ITEM:
                raise UnparseableDataset("sequence holds something other than items")
            if length == _UNDEFINED:
                yield from self._item(implicit, endian, depth)
            elif length:
                yield -length

    def _item(self, implicit: bool, endian: str, depth: int) -> _Walk:
        while True:
            header = yield 8
            group, element = struct.unpack(endian + "HH", header[:4])
            if (group << 16 | element) == _ITEM_DELIMITER:
                return
            yield from self._element(header, implicit, endian, depth)

    def _fragments(self, endian: str) -> _Walk:
        while True:
            group, element, length = struct.unpack(endian + "HHI", (yield 8))
            tag = group << 16 | element
            if tag == _SEQUENCE_DELIMITER:
                return
            if tag != _ITEM or length == _UNDEFINED:
                raise UnparseableDataset("encapsulated pixel data holds a bad fragment")
            if length:
                yield -length
