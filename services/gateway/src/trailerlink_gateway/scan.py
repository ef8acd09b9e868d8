"""A streaming structural check of a DICOM dataset, fed as its bytes arrive.

The gateway never decodes and re-encodes what it stores, and must not hold a
tomosynthesis object in memory, so it cannot hand the dataset to pydicom. Instead
:class:`DatasetScanner` pushes the bytes through the shared element walk
(:mod:`trailerlink_common.dicomwalk`, strict: it refuses what a conformant writer never
produces), inflating a deflated dataset first, and keeps only the few identifying
values it needs. A dataset "parses" when the walk ends exactly at an element boundary
of the top level, with every sequence and item closed. Memory is bounded by the largest
identifying value (a UID), whatever the object's size.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from trailerlink_common.dicomwalk import TOP_BOUNDARY, ElementWalk, MalformedDataset

# The intake check refuses what a conformant writer never produces (strict), and allows
# 32 levels of undefined-length sequences.
_MAX_DEPTH = 32
_MAX_VALUE_KEPT = 1024

_WANTED = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
    0x00280008: "number_of_frames",
}
_KEEP = dict.fromkeys(_WANTED, (0, _MAX_VALUE_KEPT))


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
        self._inflater = (
            zlib.decompressobj(-zlib.MAX_WBITS)
            if transfer_syntax_uid == DeflatedExplicitVRLittleEndian
            else None
        )
        self._error = ""
        self._buf = bytearray()
        self._walk = ElementWalk(
            implicit_vr=transfer_syntax_uid == ImplicitVRLittleEndian,
            little_endian=transfer_syntax_uid != ExplicitVRBigEndian,
            strict=True,
            max_depth=_MAX_DEPTH,
            keep=_KEEP,
        )
        self._steps = self._walk.steps
        self._request = next(self._steps)

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
        if self._walk.boundary != TOP_BOUNDARY or self._buf or self._request < 0:
            raise UnparseableDataset("data set ends inside an element")
        values = {
            name: _text(self._walk.values[tag])
            for tag, name in _WANTED.items()
            if tag in self._walk.values
        }
        missing = [
            k
            for k in (
                "sop_class_uid",
                "sop_instance_uid",
                "study_instance_uid",
                "series_instance_uid",
            )
            if not values.get(k)
        ]
        if missing:
            raise UnparseableDataset("data set lacks " + ", ".join(missing))
        try:
            frames = int(values.get("number_of_frames") or "1")
        except ValueError:
            frames = 1
        return DatasetSummary(
            sop_class_uid=values["sop_class_uid"],
            sop_instance_uid=values["sop_instance_uid"],
            study_instance_uid=values["study_instance_uid"],
            series_instance_uid=values["series_instance_uid"],
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
            self._request = self._steps.send(value)
        except MalformedDataset as exc:
            self._fail(str(exc))
        except (struct.error, StopIteration):
            self._fail("data set structure is inconsistent")
