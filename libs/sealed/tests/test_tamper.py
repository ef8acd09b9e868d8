"""A sealed object that was changed, cut, reordered or opened with the wrong key is
refused with a clear error: never returned as data, never left on disk."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from trailerlink_crypto.chunked import TAG_BYTES
from trailerlink_sealed import (
    IntegrityError,
    KeyUnwrapError,
    OpeningKey,
    OpeningKeyring,
    SealedFormatError,
    SealOptions,
    UnknownKeyError,
    read_sealed_header,
    seal,
    unseal_to_bytes,
    unseal_to_file,
)
from trailerlink_sealed.testdata import MGSpec, mg_file_bytes

CHUNK = 4096  # small chunks so that a small object has many of them


@pytest.fixture(scope="module")
def original() -> bytes:
    return mg_file_bytes(MGSpec(rows=160, cols=128, frames=3, private_after_pixels=True))


@pytest.fixture
def sealed(tmp_path: Path, original: bytes, opening_key: OpeningKey) -> bytes:
    source = tmp_path / "original.dcm"
    source.write_bytes(original)
    dest = tmp_path / "object.tls"
    seal(source, dest, opening_key.recipient, options=SealOptions(chunk_size=CHUNK))
    return dest.read_bytes()


def _header_length(sealed: bytes) -> int:
    return struct.unpack(">I", sealed[8:12])[0]


def _open(data: bytes, keyring: OpeningKeyring) -> bytes:
    return unseal_to_bytes(io.BytesIO(data), keyring)


def test_untouched_object_opens(sealed: bytes, original: bytes, keyring: OpeningKeyring) -> None:
    assert _open(sealed, keyring) == original
    body = len(sealed) - _header_length(sealed)
    assert body > 5 * (CHUNK + TAG_BYTES), "the tamper tests need several chunks"


@pytest.mark.parametrize(
    "where",
    [
        "magic",
        "version",
        "codec",
        "original_sha",
        "key_wrap",
        "wrapped_key",
        "nonce_prefix",
        "last_header_byte",
    ],
)
def test_flipped_bit_in_header_is_refused(
    where: str, sealed: bytes, keyring: OpeningKeyring
) -> None:
    header = read_sealed_header(io.BytesIO(sealed))
    raw = header.raw
    offsets = {
        "magic": 0,
        "version": 6,
        "codec": raw.index(header.codec.encode()),
        "original_sha": raw.index(bytes.fromhex(header.original_sha256)) + 5,
        "key_wrap": raw.index(header.key_wrap.encode()) + 3,
        "wrapped_key": raw.index(header.wrapped_key) + 40,
        "nonce_prefix": raw.index(header.nonce_prefix),
        "last_header_byte": len(raw) - 1,
    }
    tampered = bytearray(sealed)
    tampered[offsets[where]] ^= 0x04
    with pytest.raises(IntegrityError) as caught:
        _open(bytes(tampered), keyring)
    assert str(caught.value)


@pytest.mark.parametrize("position", [0.0, 0.3, 0.7, 0.999])
def test_flipped_bit_in_body_is_refused(
    position: float, sealed: bytes, keyring: OpeningKeyring
) -> None:
    start = _header_length(sealed)
    at = start + int((len(sealed) - start) * position)
    tampered = bytearray(sealed)
    tampered[at] ^= 0x80
    with pytest.raises(IntegrityError, match="failed authentication"):
        _open(bytes(tampered), keyring)


@pytest.mark.parametrize(
    "cut", ["at_chunk_boundary", "mid_chunk", "header_only", "half_header", "last_byte"]
)
def test_truncated_object_is_refused(cut: str, sealed: bytes, keyring: OpeningKeyring) -> None:
    start = _header_length(sealed)
    length = {
        "at_chunk_boundary": start + 3 * (CHUNK + TAG_BYTES),
        "mid_chunk": start + 3 * (CHUNK + TAG_BYTES) + 100,
        "header_only": start,
        "half_header": start // 2,
        "last_byte": len(sealed) - 1,
    }[cut]
    with pytest.raises(IntegrityError):
        _open(sealed[:length], keyring)


def test_swapped_chunks_are_refused(sealed: bytes, keyring: OpeningKeyring) -> None:
    start = _header_length(sealed)
    size = CHUNK + TAG_BYTES
    one, two = sealed[start + size : start + 2 * size], sealed[start + 2 * size : start + 3 * size]
    swapped = sealed[: start + size] + two + one + sealed[start + 3 * size :]
    with pytest.raises(IntegrityError, match="chunk 1 failed authentication"):
        _open(swapped, keyring)


def test_appended_bytes_are_refused(sealed: bytes, keyring: OpeningKeyring) -> None:
    with pytest.raises(IntegrityError):
        _open(sealed + b"\0" * 17, keyring)


def test_a_key_ring_without_the_key_id_says_which_key_is_missing(sealed: bytes) -> None:
    other = OpeningKeyring([OpeningKey.generate()])
    header = read_sealed_header(io.BytesIO(sealed))
    with pytest.raises(UnknownKeyError, match=header.key_id):
        _open(sealed, other)


def test_wrong_private_key_under_the_right_key_id_is_refused(
    sealed: bytes, opening_key: OpeningKey
) -> None:
    # A keyring that claims the object's key id but holds another private key.
    wrong = OpeningKey.generate()
    keyring = OpeningKeyring([wrong])
    keyring._by_id = {opening_key.key_id: wrong}
    with pytest.raises(KeyUnwrapError, match="wrong private key"):
        _open(sealed, keyring)


def test_object_relabelled_for_another_key_id_is_refused(
    sealed: bytes, opening_key: OpeningKey
) -> None:
    other = OpeningKey.generate()
    relabelled = sealed.replace(opening_key.key_id.encode(), other.key_id.encode())
    assert relabelled != sealed
    with pytest.raises(IntegrityError):
        _open(relabelled, OpeningKeyring([other]))


def test_unknown_version_and_critical_field_are_refused(
    sealed: bytes, keyring: OpeningKeyring
) -> None:
    v2 = sealed[:6] + b"\x02" + sealed[7:]
    with pytest.raises(SealedFormatError, match="version 2"):
        _open(v2, keyring)
    with pytest.raises(SealedFormatError, match="not a trailerlink sealed object"):
        _open(b"DICM" + sealed[4:], keyring)


def test_failed_unseal_leaves_no_file(
    tmp_path: Path, sealed: bytes, keyring: OpeningKeyring
) -> None:
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    dest = tmp_path / "out" / "object.dcm"
    with pytest.raises(IntegrityError):
        unseal_to_file(io.BytesIO(bytes(tampered)), dest, keyring)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_successful_unseal_to_file_is_the_original(
    tmp_path: Path, sealed: bytes, original: bytes, keyring: OpeningKeyring
) -> None:
    dest = tmp_path / "object.dcm"
    result = unseal_to_file(io.BytesIO(sealed), dest, keyring)
    assert dest.read_bytes() == original
    assert result.size == len(original)


def test_frame_codestream_declaring_another_size_is_refused_before_decoding() -> None:
    """A sealed object can be forged by anyone with the public key; a frame whose
    codestream claims a huge image must not make the ingest allocate it."""
    import zstandard
    from trailerlink_sealed.codecs import FrameCodec
    from trailerlink_sealed.container import (
        ContainerError,
        FrameLayout,
        decode_frame,
        encode_frame,
    )

    layout = FrameLayout(16, 16, 1, 16, 12, 0, False, False, False)
    raw = bytes(range(256)) * 2
    compressor = zstandard.ZstdCompressor()
    for codec in (FrameCodec.JPEGLS, FrameCodec.HTJ2K):
        payload = bytearray(encode_frame(raw, layout, codec, compressor)[5:])
        if codec == FrameCodec.JPEGLS:
            sof = payload.index(b"\xff\xf7")
            payload[sof + 5 : sof + 7] = (60000).to_bytes(2, "big")  # rows
        else:
            payload[20 + 12 : 20 + 16] = (60000).to_bytes(4, "big")  # Ysiz
        with pytest.raises(ContainerError, match="dimensions"):
            decode_frame(bytes(payload))
