"""The gateway's intake check: accepts what pydicom writes and reads, in any chunking,
deflated too; refuses truncated, garbage or non-conformant bytes and data sets without
their UIDs. No network. (The element walk itself is tested in libs/common.)"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom.data
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
)
from trailerlink_gateway.scan import DatasetScanner, UnparseableDataset
from trailerlink_spool.part10 import dataset_offset
from trailerlink_testing.dicom import dataset_bytes, write_synthetic

TEST_FILES = Path(os.path.dirname(pydicom.data.__file__)) / "test_files"
REAL_FILES = [
    "SC_rgb_rle.dcm",
    "image_dfl.dcm",
    "test-SR.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "JPEG2000.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_jpeg_dcmd.dcm",
    "reportsi.dcm",
    "SC_rgb_rle_16bit_2frame.dcm",
    "GDCMJ2K_TextGBR.dcm",
    "JPGExtended.dcm",
]


def _scan(data: bytes, ts: str, chunk: int = 4096) -> object:
    scanner = DatasetScanner(ts)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    return scanner.finish()


def _real(name: str) -> tuple[bytes, str, Dataset]:
    raw = (TEST_FILES / name).read_bytes()
    ds = dcmread(TEST_FILES / name)
    return raw[dataset_offset(raw) :], str(ds.file_meta.TransferSyntaxUID), ds


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_parse_with_their_identity(name: str) -> None:
    data, ts, ds = _real(name)
    summary = _scan(data, ts)
    assert summary.sop_instance_uid == ds.SOPInstanceUID
    assert summary.sop_class_uid == ds.SOPClassUID
    assert summary.study_instance_uid == ds.StudyInstanceUID
    assert summary.series_instance_uid == ds.SeriesInstanceUID
    assert summary.number_of_frames == int(ds.get("NumberOfFrames", 1) or 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(REAL_FILES), chunk=st.integers(1, 700))
def test_chunking_never_changes_the_result(name: str, chunk: int) -> None:
    data, ts, ds = _real(name)
    assert _scan(data, ts, chunk).sop_instance_uid == ds.SOPInstanceUID


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from([n for n in REAL_FILES if n != "image_dfl.dcm"]), cut=st.floats(0.0, 0.999)
)
def test_truncated_pixel_data_is_refused(name: str, cut: float) -> None:
    data, ts, _ = _real(name)
    # Cut inside the last element (pixel data or SR content): never at a boundary.
    # (7FE0,0010) as little- or big-endian bytes; a file without pixel data is cut
    # in its second half, which Hypothesis can land on an element boundary otherwise.
    last = max(data.rfind(b"\xe0\x7f\x10\x00"), data.rfind(b"\x7f\xe0\x00\x10"))
    if last < 0:
        last = len(data) // 2
    position = last + 4 + int((len(data) - last - 5) * cut)
    with pytest.raises(UnparseableDataset):
        _scan(data[:position], ts)


def test_truncated_deflate_is_refused() -> None:
    data, ts, _ = _real("image_dfl.dcm")
    with pytest.raises(UnparseableDataset, match=r"truncated|ends inside"):
        _scan(data[: len(data) // 2], ts)


@pytest.mark.parametrize("garbage", [b"\x00" * 3, os.urandom(4096), b"NOT A DICOM DATA SET" * 50])
def test_garbage_is_refused(garbage: bytes) -> None:
    with pytest.raises(UnparseableDataset):
        _scan(garbage, ExplicitVRLittleEndian)


def test_the_intake_check_is_strict() -> None:
    # The shared walk follows any two upper-case letters as a VR when asked to be
    # lenient (the sealer); the gateway refuses what a conformant writer never writes.
    element = b"\x09\x00\x10\x10ZZ\x04\x00abcd"
    with pytest.raises(UnparseableDataset, match=r"^unknown VR at \(0009,1010\)$"):
        _scan(element, ExplicitVRLittleEndian)


def test_deflated_data_set() -> None:
    data, ts, ds = _real("image_dfl.dcm")
    assert ts == DeflatedExplicitVRLittleEndian
    assert _scan(data, ts, 13).sop_instance_uid == ds.SOPInstanceUID


def test_missing_uids_are_refused() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    with pytest.raises(UnparseableDataset, match="study_instance_uid"):
        _scan(fp.getvalue(), ExplicitVRLittleEndian)


def test_synthetic_mammogram_with_frames(tmp_path: Path) -> None:
    obj = write_synthetic(
        tmp_path / "dbt.dcm",
        rows=64,
        columns=48,
        frames=5,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.13.1.3",
    )
    summary = _scan(dataset_bytes(obj.path), ExplicitVRLittleEndian, 1000)
    assert summary.number_of_frames == 5
    assert summary.sop_instance_uid == obj.sop_instance_uid
