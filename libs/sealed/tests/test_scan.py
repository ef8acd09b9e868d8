"""The header walker agrees with pydicom on where the dataset and the pixel data are
and on the image attributes, for every Part 10 file pydicom ships."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from trailerlink_sealed.dicomscan import ScanError, scan
from trailerlink_sealed.stream import ByteStream

FILES = sorted(Path(p) for p in get_testdata_files() if Path(p).is_file())


def _pieces(data: bytes, size: int = 997) -> list[bytes]:
    # Odd piece sizes: element headers straddle piece boundaries.
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_walker_agrees_with_pydicom(path: Path) -> None:
    data = path.read_bytes()
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=False)
    except Exception:
        pytest.skip("pydicom cannot read it either")
    if data[128:132] != b"DICM":
        with pytest.raises(ScanError):
            scan(ByteStream(_pieces(data)))
        return
    stream = ByteStream(_pieces(data))
    try:
        found = scan(stream)
    except ScanError:
        pytest.skip("not walkable (sealed as opaque zstd, still byte-exact)")
    if "PixelData" not in ds or found.no_pixels_reason:
        return
    element = ds["PixelData"]
    a = found.attributes
    assert (a.rows, a.columns) == (ds.get("Rows"), ds.get("Columns"))
    assert a.bits_allocated == ds.get("BitsAllocated")
    assert a.bits_stored == ds.get("BitsStored")
    assert a.pixel_representation == ds.get("PixelRepresentation")
    if found.pixel_value_length is not None:
        # (A truncated file holds less than its declared length, as pydicom reads it.)
        present = len(data) - found.pixel_value_offset
        assert min(found.pixel_value_length, present) == len(element.value)
        assert data[found.pixel_value_offset : found.pixel_value_offset + 16] == bytes(
            element.value[:16]
        )
    else:
        assert element.is_undefined_length


def test_the_sealer_walks_past_what_the_gateway_would_refuse() -> None:
    # Lenient by choice: a VR outside the standard's list does not stop the sealer
    # finding the pixel data (it keeps the bytes whatever they mean).
    path = next(p for p in FILES if p.name == "CT_small.dcm")
    data = path.read_bytes()
    offset = scan(ByteStream([data])).dataset_offset
    assert offset is not None
    odd = b"\x09\x00\x10\x10ZZ\x04\x00abcd"
    changed = data[:offset] + odd + data[offset:]
    found = scan(ByteStream(_pieces(changed)))
    assert found.pixel_value_offset == scan(ByteStream([data])).pixel_value_offset + len(odd)
    assert found.attributes.rows == 128
