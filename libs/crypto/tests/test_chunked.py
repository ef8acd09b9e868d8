"""Chunked AES-256-GCM: round trips of every shape, and every tampering refused."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trailerlink_crypto.chunked import (
    TAG_BYTES,
    IntegrityError,
    ciphertext_size,
    decrypt_chunks,
    encrypt_chunks,
    new_nonce_prefix,
)

KEY = bytes(range(32))
AAD = b"header v1"
CHUNK = 64


def seal(data: bytes, pieces: int = 1, key: bytes = KEY, prefix: bytes = b"\x01" * 7) -> bytes:
    step = max(1, len(data) // pieces)
    parts = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    return b"".join(encrypt_chunks(key, prefix, AAD, parts, CHUNK))


def open_(stored: bytes, key: bytes = KEY, aad: bytes = AAD, prefix: bytes = b"\x01" * 7) -> bytes:
    return b"".join(decrypt_chunks(key, prefix, aad, io.BytesIO(stored), CHUNK))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=CHUNK * 5 + 3), pieces=st.integers(1, 7))
def test_round_trip_any_length_any_piece_sizes(data: bytes, pieces: int) -> None:
    stored = seal(data, pieces)
    assert len(stored) == ciphertext_size(len(data), CHUNK)
    assert open_(stored) == data


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK])
def test_exact_boundaries(size: int) -> None:
    data = os.urandom(size)
    assert open_(seal(data)) == data


def test_flipped_bit_anywhere_is_refused() -> None:
    stored = bytearray(seal(os.urandom(3 * CHUNK + 10)))
    for position in (0, CHUNK + TAG_BYTES + 5, len(stored) - 1):
        tampered = bytearray(stored)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError):
            open_(bytes(tampered))


def test_truncation_at_a_chunk_boundary_is_refused() -> None:
    stored = seal(os.urandom(3 * CHUNK + 10))
    with pytest.raises(IntegrityError):
        open_(stored[: 2 * (CHUNK + TAG_BYTES)])


def test_appended_bytes_are_refused() -> None:
    stored = seal(os.urandom(2 * CHUNK))
    with pytest.raises(IntegrityError):
        open_(stored + b"\x00" * (TAG_BYTES + 1))


def test_swapped_chunks_are_refused() -> None:
    size = CHUNK + TAG_BYTES
    stored = seal(os.urandom(3 * CHUNK + 10))
    swapped = stored[size : 2 * size] + stored[:size] + stored[2 * size :]
    with pytest.raises(IntegrityError):
        open_(swapped)


def test_wrong_key_header_or_prefix_is_refused() -> None:
    stored = seal(b"pixel data")
    with pytest.raises(IntegrityError):
        open_(stored, key=bytes(32))
    with pytest.raises(IntegrityError):
        open_(stored, aad=b"header v2")
    with pytest.raises(IntegrityError):
        open_(stored, prefix=b"\x02" * 7)


def test_nonce_prefixes_are_random() -> None:
    assert new_nonce_prefix() != new_nonce_prefix()
