"""Byte-exact round trips: seal -> open -> the original file, SHA-256 equal.

The corpus: every DICOM file shipped inside pydicom (and pydicom-data when it is
installed with its files), plus synthetic mammograms covering what real modalities
send: 12/14-bit at real detector sizes, signed, MONOCHROME1, garbage above High Bit,
shifted bits, tomosynthesis-like multi-frame, big endian, implicit VR, already
compressed (JPEG-LS, JPEG 2000), private tags after the pixel data, odd lengths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.data import get_testdata_files
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian
from trailerlink_sealed.testdata import (
    DETECTOR_SIZES,
    MGSpec,
    encapsulated_file_bytes,
    mg_file_bytes,
)

Roundtrip = Callable[..., tuple[bytes, object]]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _corpus_files() -> list[Path]:
    files = [Path(p) for p in get_testdata_files() if Path(p).is_file()]
    try:  # pydicom-data ships its files inside the wheel; never fetched here
        import pydicom_data  # type: ignore[import-not-found]

        root = Path(pydicom_data.__file__).parent
        files += [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    except ImportError:
        pass
    return sorted(files)


CORPUS = _corpus_files()


def test_the_corpus_is_not_empty() -> None:
    assert len(CORPUS) > 100


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_every_pydicom_test_file_comes_back_byte_identical(
    path: Path, roundtrip: Roundtrip
) -> None:
    data = path.read_bytes()
    back, result = roundtrip(data)
    assert _sha(back) == _sha(data)
    assert result.original_sha256 == _sha(data)


SYNTHETIC = {
    "mg-14bit": MGSpec(rows=512, cols=384),
    "mg-12bit": MGSpec(rows=512, cols=384, bits_stored=12),
    "mg-10bit": MGSpec(rows=300, cols=200, bits_stored=10),
    "mg-16bit": MGSpec(rows=300, cols=200, bits_stored=16),
    "signed": MGSpec(signed=True),
    "signed-12bit-garbage": MGSpec(signed=True, bits_stored=12, high_bit_garbage=True),
    "monochrome1": MGSpec(photometric="MONOCHROME1", bits_stored=12),
    "high-bit-garbage": MGSpec(bits_stored=12, high_bit_garbage=True),
    "shifted-bits": MGSpec(bits_stored=12, high_bit=15),
    "shifted-bits-garbage": MGSpec(bits_stored=10, high_bit=13, high_bit_garbage=True),
    "tomosynthesis-64-frames": MGSpec(rows=96, cols=80, frames=64),
    "big-endian": MGSpec(transfer_syntax=ExplicitVRBigEndian, private_after_pixels=True),
    "big-endian-signed-garbage": MGSpec(
        transfer_syntax=ExplicitVRBigEndian, signed=True, bits_stored=12, high_bit_garbage=True
    ),
    "implicit-vr": MGSpec(transfer_syntax=ImplicitVRLittleEndian, private_after_pixels=True),
    "private-after-pixels": MGSpec(private_after_pixels=True),
    "odd-length-8bit": MGSpec(rows=7, cols=9, bits_allocated=8, bits_stored=8),
    "odd-length-8bit-multiframe": MGSpec(rows=5, cols=7, bits_allocated=8, bits_stored=8, frames=3),
    "rgb": MGSpec(bits_allocated=8, bits_stored=8, samples=3, photometric="RGB"),
    "tiny": MGSpec(rows=1, cols=1),
}


@pytest.mark.parametrize("codec", ["jpegls", "htj2k"])
@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_mg_comes_back_byte_identical(
    name: str, codec: str, roundtrip: Roundtrip
) -> None:
    data = mg_file_bytes(SYNTHETIC[name])
    back, result = roundtrip(data, pixel_codec=codec)
    assert _sha(back) == _sha(data)
    assert result.codec == f"{codec}+zstd", result.fallback
    assert result.fallback is None
    assert result.frames == SYNTHETIC[name].frames


@pytest.mark.parametrize("size,bits", [("ge", 12), ("fuji", 14)])
def test_full_size_mammograms_round_trip_and_compress(
    size: str, bits: int, roundtrip: Roundtrip
) -> None:
    rows, cols = DETECTOR_SIZES[size]
    data = mg_file_bytes(MGSpec(rows=rows, cols=cols, bits_stored=bits, private_after_pixels=True))
    back, result = roundtrip(data)
    assert _sha(back) == _sha(data)
    assert result.codec == "jpegls+zstd"
    assert result.ratio > 2.0


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"])
def test_already_compressed_pixel_data_passes_through(syntax: str, roundtrip: Roundtrip) -> None:
    data = encapsulated_file_bytes(MGSpec(rows=128, cols=96, frames=3), syntax)
    back, result = roundtrip(data)
    assert back == data
    assert result.codec == "raw+zstd"
    assert result.fallback is None


@pytest.mark.parametrize(
    "data",
    [b"", b"not dicom at all" * 100, bytes(range(256)) * 40],
    ids=["empty", "text", "binary"],
)
def test_non_dicom_bytes_round_trip_as_zstd(data: bytes, roundtrip: Roundtrip) -> None:
    back, result = roundtrip(data)
    assert back == data
    assert result.codec == "zstd"


def test_object_truncated_inside_pixel_data_falls_back_to_zstd(roundtrip: Roundtrip) -> None:
    data = mg_file_bytes(MGSpec(rows=64, cols=64, frames=4))
    cut = data[: len(data) - 5000]
    back, result = roundtrip(cut)
    assert back == cut
    assert result.codec == "zstd"
    assert result.fallback_kind == "unsupported"


def test_rows_that_disagree_with_the_pixel_length_still_round_trip(
    roundtrip: Roundtrip,
) -> None:
    # Rows say 64 but the value holds 64 x 48 x 2 + 100 bytes: one frame, rest as zstd.
    spec = MGSpec(rows=64, cols=48)
    data = bytearray(mg_file_bytes(spec))
    import struct

    marker = struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0"
    at = data.index(marker) + len(marker)
    (length,) = struct.unpack_from("<I", data, at)
    struct.pack_into("<I", data, at, length + 100)
    data[at + 4 + length : at + 4 + length] = bytes(range(100))
    back, result = roundtrip(bytes(data))
    assert back == bytes(data)
    assert result.frames == 1


def test_unsupported_bit_depth_is_a_counted_fallback(roundtrip: Roundtrip) -> None:
    import io

    import numpy as np
    import pydicom
    from trailerlink_sealed.testdata import _dataset

    ds = _dataset(MGSpec(rows=16, cols=16, bits_allocated=16))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelData = np.arange(256, dtype=np.uint32).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    back, result = roundtrip(buf.getvalue())
    assert back == buf.getvalue()
    assert result.codec == "zstd"
    assert result.fallback_kind == "unsupported"


@pytest.mark.parametrize(
    "name", ["big-endian-signed-garbage", "implicit-vr", "tomosynthesis-64-frames", "rgb"]
)
def test_source_pieces_of_any_size_give_the_same_object(
    name: str, tmp_path: Path, opening_key, keyring
) -> None:
    """The spool hands the sealer pieces of its own size; element headers and frames
    straddling piece boundaries must not matter."""
    from trailerlink_sealed import seal, unseal_to_bytes

    data = mg_file_bytes(SYNTHETIC[name])
    for size in (1, 7, 997, 65536):

        def pieces(size: int = size) -> list[bytes]:
            return [data[i : i + size] for i in range(0, len(data), size)]

        result = seal(pieces, tmp_path / f"{size}.tls", opening_key.recipient)
        assert result.fallback is None and result.codec == "jpegls+zstd"
        assert unseal_to_bytes(tmp_path / f"{size}.tls", keyring) == data


def test_a_container_that_would_not_reproduce_the_source_is_never_committed(
    tmp_path: Path, opening_key, keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer recomputes what its records reproduce and compares it with the
    source's SHA-256 before committing: a writer bug costs compression, never bytes."""
    from trailerlink_sealed import seal, unseal_to_bytes
    from trailerlink_sealed.container import ZstdBlocks

    data = mg_file_bytes(MGSpec(rows=64, cols=48, private_after_pixels=True))
    (tmp_path / "o.dcm").write_bytes(data)
    real = ZstdBlocks.records
    calls = {"n": 0}

    def lossy_once(self: ZstdBlocks, block: bytes):  # drops the last byte, first time only
        calls["n"] += 1
        return real(self, block[:-1] if calls["n"] == 1 else block)

    monkeypatch.setattr(ZstdBlocks, "records", lossy_once)
    result = seal(tmp_path / "o.dcm", tmp_path / "o.tls", opening_key.recipient)
    assert result.codec == "zstd" and result.fallback_kind == "round_trip"
    assert unseal_to_bytes(tmp_path / "o.tls", keyring) == data

    monkeypatch.setattr(ZstdBlocks, "records", lambda self, block: real(self, bytes(block)[:-1]))
    with pytest.raises(RuntimeError, match="does not reproduce"):
        seal(tmp_path / "o.dcm", tmp_path / "broken.tls", opening_key.recipient)
    assert not (tmp_path / "broken.tls").exists()
