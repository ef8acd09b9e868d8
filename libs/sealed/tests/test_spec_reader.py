"""An independent reader written from docs/sealed-format.md alone.

It uses only the standard library, numpy, zstandard, imagecodecs and cryptography's
HPKE/AES-GCM — nothing from trailerlink_sealed except to make the objects it reads —
and must reproduce every original. If this test needs trailerlink code to pass, the
specification is not precise enough for another team.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import zstandard
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydicom.uid import ExplicitVRBigEndian
from trailerlink_sealed import OpeningKey, SealOptions, seal
from trailerlink_sealed.testdata import MGSpec, encapsulated_file_bytes, mg_file_bytes


def spec_open(blob: bytes, private_keys: dict[str, object]) -> bytes:
    # 1. Header.
    assert blob[:6] == b"TLSEAL" and blob[6] == 1 and blob[7] == 0
    (h,) = struct.unpack(">I", blob[8:12])
    header, fields, pos = blob[:h], {}, 12
    while pos < h:
        tag, length = struct.unpack(">BH", header[pos : pos + 3])
        fields[tag] = header[pos + 3 : pos + 3 + length]
        pos += 3 + length
    assert all(
        t in (1, 2, 3, 4, 5, 6, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15) for t in fields if t < 0x80
    )
    assert fields[0x11] == b"HPKE-v1-base-X25519-HKDF-SHA256-AES-256-GCM"
    assert fields[0x15] == b"AES-256-GCM-STREAM-v1"
    key_id = fields[0x10].decode()
    # 2. Key wrap.
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    data_key = suite.decrypt(
        fields[0x12],
        private_keys[key_id],
        info=b"trailerlink sealed v1 data key\x00" + key_id.encode(),
    )
    # 3. Chunks.
    (chunk,) = struct.unpack(">I", fields[0x13])
    prefix = fields[0x14]
    body, plain, i = blob[h:], bytearray(), 0
    aead = AESGCM(data_key)
    while True:
        stored = body[i * (chunk + 16) : (i + 1) * (chunk + 16)]
        last = (i + 1) * (chunk + 16) >= len(body)
        nonce = prefix + struct.pack(">IB", i, 1 if last else 0)
        plain += aead.decrypt(nonce, stored, header)
        if last:
            break
        i += 1
    # 4. Container.
    assert plain[:4] == b"TLC\x01"
    out, pos = bytearray(), 4
    while True:
        kind, length = struct.unpack(">BI", plain[pos : pos + 5])
        payload = bytes(plain[pos + 5 : pos + 5 + length])
        pos += 5 + length
        if kind == ord("E"):
            assert struct.unpack(">Q", payload)[0] == len(out) and pos == len(plain)
            break
        if kind == ord("Z"):
            out += zstandard.ZstdDecompressor().decompress(payload)
        elif kind == ord("R"):
            out += payload
        elif kind == ord("F"):
            out += spec_frame(payload)
        else:
            raise AssertionError(f"unknown record {kind}")
    # 5. Verification.
    assert len(out) == struct.unpack(">Q", fields[3])[0]
    assert hashlib.sha256(out).digest() == fields[4]
    if 5 in fields:
        (offset,) = struct.unpack(">Q", fields[5])
        assert hashlib.sha256(out[offset:]).digest() == fields[6]
    return bytes(out)


def spec_frame(p: bytes) -> bytes:
    codec, flags, a, b, s, n, _, rows, cols, length = struct.unpack(">BBBBBBHIII", p[:20])
    stream = p[20 : 20 + length]
    # Components per pixel (rows, cols, n), whatever order the codestream keeps them in.
    image = (
        imagecodecs.jpegls_decode(stream)
        if codec == 1
        else imagecodecs.htj2k_decode(stream, planar=False)
    )
    v = np.asarray(image, dtype=np.int64).reshape(rows, cols, n)
    if flags & 0x04:  # planar: component planes one after the other
        v = np.moveaxis(v, -1, 0)
    if flags & 0x02:
        v = v ^ (1 << (b - 1))
    w = (v << s) % (1 << a)
    if flags & 0x02 and s + b < a:
        negative = (w >> (s + b - 1)) & 1
        w = w | negative * (((1 << a) - 1) ^ ((1 << (s + b)) - 1))
    dtype = np.uint8 if a == 8 else (">u2" if flags & 0x01 else "<u2")
    canonical = w.astype(dtype).tobytes()
    if flags & 0x08:
        residual = zstandard.ZstdDecompressor().decompress(p[20 + length :])
        return (
            bytes(x ^ y for x, y in zip(canonical, residual, strict=True))
            if len(canonical) < 4096
            else (np.frombuffer(canonical, np.uint8) ^ np.frombuffer(residual, np.uint8)).tobytes()
        )
    assert len(p) == 20 + length
    return canonical


CASES = {
    "mg": MGSpec(rows=128, cols=96, private_after_pixels=True),
    "signed-garbage-big-endian": MGSpec(
        signed=True, bits_stored=12, high_bit_garbage=True, transfer_syntax=ExplicitVRBigEndian
    ),
    "shifted": MGSpec(bits_stored=10, high_bit=13),
    "multiframe": MGSpec(rows=40, cols=30, frames=6),
    "rgb": MGSpec(bits_allocated=8, bits_stored=8, samples=3, photometric="RGB"),
}


@pytest.mark.parametrize("codec", ["jpegls", "htj2k"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_reader_written_from_the_spec_opens_what_the_codec_seals(
    name: str, codec: str, tmp_path: Path, opening_key: OpeningKey
) -> None:
    data = mg_file_bytes(CASES[name])
    (tmp_path / "o.dcm").write_bytes(data)
    seal(
        tmp_path / "o.dcm",
        tmp_path / "o.tls",
        opening_key.recipient,
        options=SealOptions(pixel_codec=codec, chunk_size=5000),
    )
    blob = (tmp_path / "o.tls").read_bytes()
    assert spec_open(blob, {opening_key.key_id: opening_key.private_key}) == data


def test_the_spec_reader_also_opens_pass_through_and_opaque_objects(
    tmp_path: Path, opening_key: OpeningKey
) -> None:
    keys = {opening_key.key_id: opening_key.private_key}
    for n, data in enumerate(
        [
            encapsulated_file_bytes(MGSpec(rows=32, cols=32, frames=2), "1.2.840.10008.1.2.4.80"),
            b"plain bytes, no DICOM",
            b"",
        ]
    ):
        (tmp_path / f"{n}.bin").write_bytes(data)
        seal(tmp_path / f"{n}.bin", tmp_path / f"{n}.tls", opening_key.recipient)
        assert spec_open((tmp_path / f"{n}.tls").read_bytes(), keys) == data


def test_jpegls_codestreams_are_standard_and_coded_at_the_bits_used(
    tmp_path: Path, opening_key: OpeningKey
) -> None:
    """An independent JPEG-LS decoder (pyjpegls) reads our frame codestreams, and
    their precision is the bits the values use — as a PACS stores .4.80."""
    import jpeg_ls
    from trailerlink_sealed.codecs import FrameCodec, Tuning, charls_available, encode
    from trailerlink_sealed.testdata import synthetic_mammogram

    image = synthetic_mammogram(320, 240, 12, seed=4)
    for scale in (None, 0.5, 2.0):  # None: chosen by trial, as the sealer does
        tuning = Tuning()
        tuning.threshold_scale = scale
        codestream = encode(FrameCodec.JPEGLS, image, 12, tuning=tuning)
        decoded, info = jpeg_ls.decode_buffer(codestream)
        assert np.array_equal(np.frombuffer(decoded, np.uint16).reshape(image.shape), image)
        if charls_available():
            assert info["bits_per_sample"] == 12


def test_threshold_tuning_keeps_the_standard_defaults_at_scale_one() -> None:
    from trailerlink_sealed.codecs import thresholds_for

    assert thresholds_for(14, 1.0) is None
    assert thresholds_for(8, 0.5) is None  # 8-bit data keeps the defaults
    assert thresholds_for(14, 0.5) == (9, 34, 138)  # defaults 18, 67, 276 halved
    assert thresholds_for(12, 2.0) == (36, 134, 552)
