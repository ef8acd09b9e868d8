"""The shared element walk: follows nested sequences, items and fragments in any
chunking, ends only at a top-level boundary, and differs between strict (the gateway)
and lenient (the sealer) exactly where documented. Its drivers — the gateway's intake
check, the sealer's scan — are tested where they live."""

from __future__ import annotations

import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from trailerlink_common.dicomwalk import (
    NO_STOP,
    PIXEL_DATA,
    TOP_BOUNDARY,
    ElementWalk,
    MalformedDataset,
)

SOP_INSTANCE_UID = 0x00080018


def _walk(
    data: bytes,
    *,
    implicit: bool = False,
    little: bool = True,
    strict: bool = True,
    max_depth: int = 32,
    keep: dict[int, tuple[int, int]] | None = None,
    stop_at: int = NO_STOP,
) -> tuple[ElementWalk, int]:
    """Drive the walk over ``data``; (walk, bytes consumed). Raises MalformedDataset."""
    walk = ElementWalk(
        implicit_vr=implicit,
        little_endian=little,
        strict=strict,
        max_depth=max_depth,
        keep=keep or {},
        stop_at=stop_at,
    )
    pos = 0
    request = next(walk.steps)
    while pos < len(data):
        if request > 0:
            if pos + request > len(data):
                break
            value, pos = data[pos : pos + request], pos + request
        else:
            if pos - request > len(data):
                break
            value, pos = b"", pos - request
        try:
            request = walk.steps.send(value)
        except StopIteration:
            break
    return walk, pos


def _whole(walk: ElementWalk, consumed: int, data: bytes) -> bool:
    return walk.boundary == TOP_BOUNDARY and consumed == len(data)


def _encode(ds: Dataset, ts: str) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = ts != ExplicitVRBigEndian
    fp.is_implicit_VR = ts == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    return fp.getvalue()


def _nested(ts: str) -> bytes:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4.5"
    inner = Dataset()
    inner.CodeValue = "121071"
    inner.CodeMeaning = "Finding"
    item = Dataset()
    item.ConceptNameCodeSequence = [inner]
    item.TextValue = "synthetic"
    ds.ContentSequence = [item, item]
    ds["ContentSequence"].is_undefined_length = True
    ds.ContentSequence[0]["ConceptNameCodeSequence"].is_undefined_length = True
    return _encode(ds, ts)


def _explicit(tag: int, vr: bytes, value: bytes, reserved: bytes = b"\0\0") -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return head + reserved + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
@pytest.mark.parametrize("strict", [True, False])
def test_nested_sequences_of_undefined_length_are_followed(ts: str, strict: bool) -> None:
    data = _nested(ts)
    implicit, little = ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian
    walk, consumed = _walk(
        data, implicit=implicit, little=little, strict=strict, keep={SOP_INSTANCE_UID: (0, 64)}
    )
    assert _whole(walk, consumed, data)
    assert walk.values[SOP_INSTANCE_UID].rstrip(b"\0") == b"1.2.3.4.5"
    cut = data[:-9]
    walk, consumed = _walk(cut, implicit=implicit, little=little, strict=strict)
    assert not _whole(walk, consumed, cut)


def test_encapsulated_fragments_end_at_their_delimiter() -> None:
    ds = Dataset()
    ds.PixelData = encapsulate([b"\xff\xd8frame-one\xff\xd9", b"\xff\xd8frame-2\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = _encode(ds, ExplicitVRLittleEndian)
    walk, consumed = _walk(data)
    assert _whole(walk, consumed, data)
    walk, consumed = _walk(data[:-8])  # sequence delimiter missing
    assert not _whole(walk, consumed, data[:-8])


def test_garbage_is_malformed() -> None:
    with pytest.raises(MalformedDataset):
        _walk(b"NOT A DICOM DATA SET" * 50)


def test_strict_refuses_unknown_vrs_the_lenient_walk_follows() -> None:
    data = _explicit(0x00091001, b"ZZ", b"abcd") + _explicit(SOP_INSTANCE_UID, b"UI", b"1.2\0")
    with pytest.raises(MalformedDataset, match=r"unknown VR at \(0009,1001\)"):
        _walk(data, strict=True)
    walk, consumed = _walk(data, strict=False, keep={SOP_INSTANCE_UID: (0, 64)})
    assert _whole(walk, consumed, data) and walk.values[SOP_INSTANCE_UID] == b"1.2\0"
    with pytest.raises(MalformedDataset, match="invalid VR"):
        _walk(_explicit(0x00091001, b"z1", b"abcd"), strict=False)


def test_strict_refuses_non_zero_reserved_bytes() -> None:
    data = _explicit(0x00091010, b"OB", b"\x01\x02", reserved=b"\x01\x00")
    with pytest.raises(MalformedDataset, match="bad reserved bytes"):
        _walk(data, strict=True)
    walk, consumed = _walk(data, strict=False)
    assert _whole(walk, consumed, data)


def test_undefined_length_text_is_refused_strictly_and_read_as_a_sequence_leniently() -> None:
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"abcd"
    delimiter = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    # (A short VR's 16-bit length cannot be undefined: UT is a long VR.)
    data = b"\x09\x00\x10\x10UT\0\0\xff\xff\xff\xff" + item + delimiter
    with pytest.raises(MalformedDataset, match="cannot have one"):
        _walk(data, strict=True)
    walk, consumed = _walk(data, strict=False)
    assert _whole(walk, consumed, data)


def test_strict_refuses_a_fragment_of_undefined_length() -> None:
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    end_item = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    delimiter = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = b"\xe0\x7f\x10\x00OB\0\0\xff\xff\xff\xff" + item + end_item + delimiter
    with pytest.raises(MalformedDataset, match="bad fragment"):
        _walk(data, strict=True)
    walk, consumed = _walk(data, strict=False)
    assert _whole(walk, consumed, data)


def _deep(levels: int) -> bytes:
    sq = b"\x09\x00\x10\x10SQ\0\0\xff\xff\xff\xff"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    end_item = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    delimiter = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (sq + item) * levels + (end_item + delimiter) * levels


def test_max_depth_bounds_the_sequences_opened() -> None:
    data = _deep(32)
    walk, consumed = _walk(data, max_depth=32)
    assert _whole(walk, consumed, data)
    with pytest.raises(MalformedDataset, match="nested too deeply"):
        _walk(_deep(33), max_depth=32)


def test_stop_at_ends_after_the_header_of_the_first_tag_at_or_past_it() -> None:
    pixels = _explicit(PIXEL_DATA, b"OW", b"\0" * 16)
    data = _explicit(SOP_INSTANCE_UID, b"UI", b"1.2\0") + pixels
    walk, consumed = _walk(data, stop_at=PIXEL_DATA)
    assert walk.stopped_at == (PIXEL_DATA, b"OW", 16)
    assert consumed == len(data) - 16
    later = _explicit(0x7FE10010, b"OB", b"\0\0")
    walk, _ = _walk(_explicit(SOP_INSTANCE_UID, b"UI", b"1.2\0") + later, stop_at=PIXEL_DATA)
    assert walk.stopped_at is not None and walk.stopped_at[0] == 0x7FE10010


def test_keep_reads_top_level_values_within_bounds_only() -> None:
    rows = 0x00280010
    data = _explicit(rows, b"US", b"\x40\x00") + _explicit(rows, b"US", b"")
    walk, _ = _walk(data, keep={rows: (2, NO_STOP)})
    assert walk.values == {rows: b"\x40\x00"}  # the empty duplicate is outside the bounds
    walk, _ = _walk(_explicit(SOP_INSTANCE_UID, b"UI", b"1.22"), keep={SOP_INSTANCE_UID: (0, 2)})
    assert walk.values == {}
