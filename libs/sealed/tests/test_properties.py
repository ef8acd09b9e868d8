"""Property-based tests: any pixel words, any bit layout, any header shape come back
byte for byte — through the frame codec when it can, through zstd when it cannot."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pydicom
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from trailerlink_sealed import OpeningKey, OpeningKeyring, seal, unseal_to_bytes
from trailerlink_sealed.codecs import CodecError, FrameCodec
from trailerlink_sealed.container import (
    FrameLayout,
    RoundTripError,
    decode_frame,
    encode_frame,
)

_RESIDUAL = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True)


@st.composite
def layouts(draw: st.DrawFn) -> FrameLayout:
    bits_allocated = draw(st.sampled_from([8, 16]))
    bits_stored = draw(st.integers(2, bits_allocated))
    high_bit = draw(st.integers(bits_stored - 1, bits_allocated - 1))
    samples = draw(st.sampled_from([1, 3]))
    return FrameLayout(
        rows=draw(st.integers(1, 24)),
        columns=draw(st.integers(1, 24)),
        samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        shift=high_bit + 1 - bits_stored,
        signed=draw(st.booleans()),
        planar=samples == 3 and draw(st.booleans()),
        big_endian=bits_allocated == 16 and draw(st.booleans()),
    )


def _words(layout: FrameLayout, seed: int, kind: str) -> bytes:
    rng = np.random.default_rng(seed)
    n = layout.rows * layout.columns * layout.samples
    top = 2**layout.bits_allocated
    if kind == "garbage":
        words = rng.integers(0, top, n)
    else:
        values = rng.integers(0, 2**layout.bits_stored, n)
        if kind == "smooth":
            values = np.clip(
                np.cumsum(rng.integers(-3, 4, n)) + 2 ** (layout.bits_stored - 1),
                0,
                2**layout.bits_stored - 1,
            )
        if layout.signed:  # proper two's complement, sign-extended above High Bit
            values = values - 2 ** (layout.bits_stored - 1)
        words = (values << layout.shift) % top
    dtype = np.uint8 if layout.bits_allocated == 8 else (">u2" if layout.big_endian else "<u2")
    return np.asarray(words).astype(dtype).tobytes()


@settings(max_examples=150, deadline=None)
@given(
    layout=layouts(),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["clean", "smooth", "garbage"]),
    codec=st.sampled_from([FrameCodec.JPEGLS, FrameCodec.HTJ2K]),
)
def test_any_frame_words_reproduce_exactly(
    layout: FrameLayout, seed: int, kind: str, codec: FrameCodec
) -> None:
    raw = _words(layout, seed, kind)
    try:
        record = encode_frame(raw, layout, codec, _RESIDUAL)
    except (RoundTripError, CodecError):
        # Refusing is allowed (the sealer then uses zstd): OpenJPH, for one, does not
        # reproduce some tiny multi-component images. JPEG-LS must always succeed.
        assert codec != FrameCodec.JPEGLS
        return
    assert decode_frame(record[5:]) == raw


_KEY = OpeningKey.generate()
_KEYRING = OpeningKeyring([_KEY])


@st.composite
def datasets(draw: st.DrawFn) -> bytes:
    layout = draw(layouts())
    syntax = draw(
        st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
    )
    frames = draw(st.integers(1, 3))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.PatientName = "TEST^SYNTHETIC"
    # Random text elements of odd and even lengths, and an optional nested sequence.
    for i, text in enumerate(draw(st.lists(st.text("ABCDEF 0123", max_size=21), max_size=4))):
        ds.add_new(0x00091010 + i, "LO", text)
    if draw(st.booleans()):
        item = Dataset()
        item.CodeValue = draw(st.text("XYZ", min_size=1, max_size=5))
        ds.add_new(0x00400260, "SQ", [item])
    ds.SamplesPerPixel = layout.samples
    ds.PhotometricInterpretation = "RGB" if layout.samples == 3 else "MONOCHROME2"
    if layout.samples == 3:
        ds.PlanarConfiguration = int(layout.planar)
    ds.Rows, ds.Columns = layout.rows, layout.columns
    ds.BitsAllocated, ds.BitsStored = layout.bits_allocated, layout.bits_stored
    ds.HighBit = layout.bits_stored - 1 + layout.shift
    ds.PixelRepresentation = int(layout.signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["clean", "smooth", "garbage"]))
    little = syntax != ExplicitVRBigEndian
    big_layout = FrameLayout(
        **{**layout.__dict__, "big_endian": not little and layout.bits_allocated == 16}
    )
    pixels = b"".join(_words(big_layout, seed + f, kind) for f in range(frames))
    pixels += b"\0" * (len(pixels) % 2)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    e = "<" if little else ">"
    vr = b"OB" if layout.bits_allocated == 8 else b"OW"
    if syntax == ImplicitVRLittleEndian:
        buf.write(struct.pack("<HHI", 0x7FE0, 0x0010, len(pixels)))
    else:
        buf.write(
            struct.pack(e + "HH", 0x7FE0, 0x0010) + vr + struct.pack(e + "HI", 0, len(pixels))
        )
    buf.write(pixels)
    tail = draw(st.binary(max_size=40))
    if tail:  # a private element after the pixel data
        tail += b"\0" * (len(tail) % 2)
        if syntax == ImplicitVRLittleEndian:
            buf.write(struct.pack("<HHI", 0x7FE1, 0x1001, len(tail)) + tail)
        else:
            buf.write(
                struct.pack(e + "HH", 0x7FE1, 0x1001)
                + b"OB"
                + struct.pack(e + "HI", 0, len(tail))
                + tail
            )
    return buf.getvalue()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=datasets())
def test_any_header_shape_and_pixels_seal_and_open_byte_identical(
    tmp_path: Path, data: bytes
) -> None:
    source = tmp_path / "o.dcm"
    source.write_bytes(data)
    result = seal(source, tmp_path / "o.tls", _KEY.recipient)
    assert result.fallback is None, result.fallback
    assert result.codec == "jpegls+zstd"
    assert unseal_to_bytes(tmp_path / "o.tls", _KEYRING) == data


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=5000), cut=st.integers(0, 5000))
def test_arbitrary_and_truncated_bytes_round_trip(tmp_path: Path, data: bytes, cut: int) -> None:
    # Including a DICOM preamble so that the header walker sees junk after "DICM".
    blob = (b"\0" * 128 + b"DICM" + data)[: 132 + cut]
    source = tmp_path / "o.bin"
    source.write_bytes(blob)
    seal(source, tmp_path / "o.tls", _KEY.recipient)
    assert unseal_to_bytes(tmp_path / "o.tls", _KEYRING) == blob
