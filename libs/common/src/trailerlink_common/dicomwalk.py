"""The one streaming walker over a DICOM dataset's element structure.

Neither the gateway (checking what it receives) nor the sealer (finding the pixel
data) may hold an object in memory or hand it to pydicom, so both walk the tags, VRs,
lengths, sequences, items and encapsulated fragments themselves, skipping values.
This module is that walk, written once and without I/O: :class:`ElementWalk` is a
generator that asks its driver for bytes. The gateway pushes bytes into it as they
arrive from the network; the sealer pulls them from its stream. Pure Python and the
standard library, so the gateway's image gains nothing by depending on it.

The protocol: ``request = next(walk.steps)``, then repeatedly
``request = walk.steps.send(data)`` where, for ``request > 0``, ``data`` is the next
``request`` bytes and, for ``request < 0``, the driver has skipped the next
``-request`` bytes and sends ``b""``. The walk raises :class:`MalformedDataset` (the
message says why, never a value) and ends (``StopIteration``) only when it stops at a
top-level tag (``stop_at``). While it waits for an element or item header,
:attr:`ElementWalk.boundary` says so: a dataset is whole only if its bytes end at
:data:`TOP_BOUNDARY`.

Its users differ in how much they refuse, a choice made with ``strict``:

* ``strict=True`` (the gateway): refuse what a conformant writer never produces — a VR
  not in the standard's list, non-zero reserved bytes after a long VR, an undefined
  length on an element other than SQ, UN, OB, OW (or implicit VR), an encapsulated
  fragment that is not an item of defined length.
* ``strict=False`` (the sealer): walk whatever it can. Any two upper-case letters are a
  VR, reserved bytes are not looked at, and any undefined-length element is read as a
  sequence of items (a UN's content as implicit VR little endian). The sealer keeps the
  bytes whatever they mean, so it only needs to find the elements, not judge them.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Mapping

PIXEL_DATA = 0x7FE00010
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF

#: :attr:`ElementWalk.boundary`: inside an element (or a value being skipped).
INSIDE = 0
#: Waiting for the header of an element or item inside a sequence.
NESTED_BOUNDARY = 1
#: Waiting for the header of a top-level element: the dataset may end here.
TOP_BOUNDARY = 2

#: Never reached: walk the whole dataset.
NO_STOP = 1 << 32

LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
KNOWN_VRS = LONG_VRS | frozenset(
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

# A request from the walk to its driver: n > 0 means "send me the next n bytes",
# n < 0 means "skip the next -n bytes (and send b'')".
Steps = Generator[int, bytes, None]


class MalformedDataset(ValueError):
    """The bytes are not a dataset the walk can follow. The message says why, without
    values."""


class ElementWalk:
    """A walk over one dataset's elements; drive :attr:`steps` (see the module).

    ``keep`` maps top-level tags to the (shortest, longest) value length to keep: those
    values are read into :attr:`values` (tag to raw bytes; a later kept duplicate
    replaces an earlier one), values of other lengths are skipped. ``stop_at``: the
    walk ends at the first top-level element whose tag is at or after it, once its
    header is read (:attr:`stopped_at` holds tag, VR and length; the driver is at the
    first byte of its value). ``max_depth``: elements of undefined length may open
    sequences at nesting depths below it (the top level is depth 0).
    """

    def __init__(
        self,
        *,
        implicit_vr: bool,
        little_endian: bool,
        strict: bool,
        max_depth: int,
        keep: Mapping[int, tuple[int, int]],
        stop_at: int = NO_STOP,
    ) -> None:
        self._implicit = implicit_vr
        self._endian = "<" if little_endian else ">"
        self._strict = strict
        self._max_depth = max_depth
        self._keep = keep
        self._stop_at = stop_at
        self.values: dict[int, bytes] = {}
        self.stopped_at: tuple[int, bytes, int] | None = None
        self.boundary = INSIDE
        self.steps: Steps = self._top_level()

    def _top_level(self) -> Steps:
        implicit, endian = self._implicit, self._endian
        while True:
            self.boundary = TOP_BOUNDARY
            header = yield 8
            self.boundary = INSIDE
            tag, vr, length = yield from self._header(header, implicit, endian)
            if tag >= self._stop_at:
                self.stopped_at = (tag, vr, length)
                return
            yield from self._element(tag, vr, length, implicit, endian, 0)

    def _header(
        self, header: bytes, implicit: bool, endian: str
    ) -> Generator[int, bytes, tuple[int, bytes, int]]:
        """Complete an element header; the return value is (tag, VR, length)."""
        group, element = struct.unpack(endian + "HH", header[:4])
        tag = group << 16 | element
        if group == 0xFFFE or implicit:
            (length,) = struct.unpack(endian + "I", header[4:8])
            return tag, b"", length
        vr = header[4:6]
        if self._strict:
            if vr not in KNOWN_VRS:
                raise MalformedDataset(f"unknown VR at ({group:04X},{element:04X})")
        elif not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise MalformedDataset(f"invalid VR at ({group:04X},{element:04X})")
        if vr in LONG_VRS:
            if self._strict and header[6:8] != b"\x00\x00":
                raise MalformedDataset(f"bad reserved bytes at ({group:04X},{element:04X})")
            (length,) = struct.unpack(endian + "I", (yield 4))
        else:
            (length,) = struct.unpack(endian + "H", header[6:8])
        return tag, vr, length

    def _element(
        self, tag: int, vr: bytes, length: int, implicit: bool, endian: str, depth: int
    ) -> Steps:
        if tag >> 16 == 0xFFFE:
            raise MalformedDataset("item or delimiter outside a sequence")
        if length != UNDEFINED:
            bounds = self._keep.get(tag) if depth == 0 else None
            if bounds is not None and bounds[0] <= length <= bounds[1]:
                self.values[tag] = (yield length) if length else b""
            elif length:
                yield -length
            return
        if depth >= self._max_depth:
            raise MalformedDataset("sequences nested too deeply")
        if not self._strict:
            # An undefined-length UN holds an implicit VR little endian sequence.
            if vr == b"UN":
                yield from self._sequence(True, "<", depth + 1)
            else:
                yield from self._sequence(implicit, endian, depth + 1)
        elif vr == b"SQ" or (implicit and tag != PIXEL_DATA):
            yield from self._sequence(implicit, endian, depth + 1)
        elif vr == b"UN":
            yield from self._sequence(True, "<", depth + 1)
        elif vr in (b"OB", b"OW") or (implicit and tag == PIXEL_DATA):
            yield from self._fragments(endian)
        else:
            raise MalformedDataset("undefined length on an element that cannot have one")

    def _sequence(self, implicit: bool, endian: str, depth: int) -> Steps:
        while True:
            self.boundary = NESTED_BOUNDARY
            header = yield 8
            self.boundary = INSIDE
            group, element, length = struct.unpack(endian + "HHI", header)
            tag = group << 16 | element
            if tag == SEQUENCE_DELIMITER:
                return
            if tag != ITEM:
                raise MalformedDataset("sequence holds something other than items")
            if length == UNDEFINED:
                yield from self._item(implicit, endian, depth)
            elif length:
                yield -length

    def _item(self, implicit: bool, endian: str, depth: int) -> Steps:
        while True:
            self.boundary = NESTED_BOUNDARY
            header = yield 8
            self.boundary = INSIDE
            group, element = struct.unpack(endian + "HH", header[:4])
            if (group << 16 | element) == ITEM_DELIMITER:
                return
            tag, vr, length = yield from self._header(header, implicit, endian)
            yield from self._element(tag, vr, length, implicit, endian, depth)

    def _fragments(self, endian: str) -> Steps:
        while True:
            self.boundary = NESTED_BOUNDARY
            header = yield 8
            self.boundary = INSIDE
            group, element, length = struct.unpack(endian + "HHI", header)
            tag = group << 16 | element
            if tag == SEQUENCE_DELIMITER:
                return
            if tag != ITEM or length == UNDEFINED:
                raise MalformedDataset("encapsulated pixel data holds a bad fragment")
            if length:
                yield -length
