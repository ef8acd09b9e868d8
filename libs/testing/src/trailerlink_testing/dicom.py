"""Synthetic DICOM objects for tests and benchmarks: no real patient, ever.

Patient attributes are fixed test values (name ``TEST^SYNTHETIC``, an NHS number from
the 999 test range). Pixel data is generated row by row and appended to the file, so a
500 MB tomosynthesis object is written without holding it in memory.

    from trailerlink_testing.dicom import write_synthetic, HOLOGIC_ROWS, HOLOGIC_COLUMNS
    path = write_synthetic(tmp / "mg.dcm", rows=HOLOGIC_ROWS, columns=HOLOGIC_COLUMNS)
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
DIGITAL_MAMMOGRAPHY_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
BREAST_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # a class a breast gateway does not take

# A Hologic Selenia Dimensions full-field image: 3328 columns x 4096 rows, 16 bits
# allocated (about 27 MB).
HOLOGIC_ROWS = 4096
HOLOGIC_COLUMNS = 3328

TEST_PATIENT_NAME = "TEST^SYNTHETIC"
TEST_NHS_NUMBERS = ("9990000018", "9990000026", "9990000034", "9990000042", "9990000050")
# Our own UID root for synthetic objects (UUID-derived 2.25 root, prefix of generate_uid).
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class SyntheticObject:
    """What was written: where, its UIDs, and its size."""

    path: Path
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    size: int


def new_uid() -> str:
    return str(generate_uid(prefix=_UID_PREFIX))


def _header(
    *,
    sop_class_uid: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    rows: int,
    columns: int,
    bits_stored: int,
    frames: int,
    instance_number: int,
    patient: int,
    laterality: str,
    view: str,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.ContentTime = "090000"
    ds.AccessionNumber = f"TEST{patient:06d}"
    ds.Modality = "MG"
    ds.Manufacturer = "trailerlink synthetic"
    ds.PatientName = TEST_PATIENT_NAME
    ds.PatientID = TEST_NHS_NUMBERS[patient % len(TEST_NHS_NUMBERS)]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    return ds


def _pixel_rows(rows: int, columns: int, bits_stored: int, frames: int, seed: int):
    """Yield the pixel data, one row at a time: noise inside a half-ellipse 'breast'."""
    rng = random.Random(seed)
    mask = bytes(b & ((1 << max(bits_stored - 8, 0)) - 1) for b in range(256))
    row_bytes = columns * 2
    # A pool of noise rows, re-used with offsets: random enough, and fast.
    pool = bytearray(rng.randbytes(row_bytes * 64 + row_bytes))
    pool[1::2] = pool[1::2].translate(mask)
    zeros = bytes(row_bytes)
    centre = rows / 2
    for frame in range(frames):
        for r in range(rows):
            y = (r - centre) / centre
            width = int(columns * 0.85 * max(0.0, 1 - y * y) ** 0.5)
            start = ((r * 7 + frame * 13) % 64) * row_bytes
            yield bytes(pool[start : start + width * 2]) + zeros[width * 2 :]


def write_synthetic(
    path: Path,
    *,
    rows: int = 512,
    columns: int = 416,
    bits_stored: int = 14,
    frames: int = 1,
    sop_class_uid: str = DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    instance_number: int = 1,
    patient: int = 0,
    seed: int = 0,
    implicit_vr: bool = False,
) -> SyntheticObject:
    """Write a synthetic mammogram (or, with ``frames``, tomosynthesis) Part 10 file.

    Uncompressed, 16 bits allocated, ``bits_stored`` (12-16) stored.
    """
    if not 9 <= bits_stored <= 16:
        raise ValueError("bits_stored must be 9..16")
    study_uid = study_instance_uid or new_uid()
    series_uid = series_instance_uid or new_uid()
    sop_uid = sop_instance_uid or new_uid()
    views = [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    laterality, view = views[(instance_number - 1) % 4]
    ds = _header(
        sop_class_uid=sop_class_uid,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        rows=rows,
        columns=columns,
        bits_stored=bits_stored,
        frames=frames,
        instance_number=instance_number,
        patient=patient,
        laterality=laterality,
        view=view,
    )
    ts = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True, implicit_vr=implicit_vr, little_endian=True)
    length = rows * columns * 2 * frames
    with open(path, "ab") as f:
        # (7FE0,0010) Pixel Data, OW, appended last: nothing follows it in the data set.
        if implicit_vr:
            f.write(struct.pack("<HHI", 0x7FE0, 0x0010, length))
        else:
            f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        for row in _pixel_rows(rows, columns, bits_stored, frames, seed):
            f.write(row)
    return SyntheticObject(path, study_uid, series_uid, sop_uid, sop_class_uid, path.stat().st_size)


def write_study(
    directory: Path,
    images: int,
    *,
    rows: int = 512,
    columns: int = 416,
    bits_stored: int = 14,
    patient: int = 0,
    seed: int = 0,
) -> list[SyntheticObject]:
    """``images`` synthetic mammograms of one study (views cycle R/L CC/MLO)."""
    study, series = new_uid(), new_uid()
    return [
        write_synthetic(
            Path(directory) / f"img{i:04d}.dcm",
            rows=rows,
            columns=columns,
            bits_stored=bits_stored,
            study_instance_uid=study,
            series_instance_uid=series,
            instance_number=i + 1,
            patient=patient,
            seed=seed + i,
        )
        for i in range(images)
    ]


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta Information of a Part 10 file (small files)."""
    raw = Path(path).read_bytes()
    if raw[128:132] != b"DICM":
        raise ValueError("not a DICOM Part 10 file")
    (group_length,) = struct.unpack_from("<I", raw, 132 + 8)
    return raw[132 + 12 + group_length :]
