"""Chunked AES-256-GCM: encrypt and verify a stream of any length in bounded memory.

The plaintext is cut into chunks of ``chunk_size`` bytes (the last may be shorter or
empty). Chunk ``i`` is sealed with AES-256-GCM under

    nonce = nonce_prefix (7 bytes, random per stream) || i (4 bytes, big-endian)
            || last (1 byte: 0x01 for the final chunk, else 0x00)
    associated data = the caller's ``aad`` (typically the whole file header)

and stored as ciphertext || 16-byte tag, so every stored chunk except the last is
exactly ``chunk_size + 16`` bytes. This is the STREAM construction (Hoang, Reyhanitabar,
Rogaway, Vizár 2015): reordering or dropping chunks changes a nonce, truncating at a
chunk boundary leaves a final chunk not flagged last, and the header is bound to every
chunk — each is detected as :class:`IntegrityError`, never returned as data.

A (key, nonce_prefix) pair must never encrypt two different streams. Callers use a
fresh key per stream (a sealed object has a random data key; a spool file derives its
own key from the spool key with HKDF and a random salt), so the random prefix is
defence in depth rather than the only guard against nonce reuse.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_PREFIX_BYTES = 7
TAG_BYTES = 16
DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_CHUNKS = 2**32 - 1


class IntegrityError(Exception):
    """Ciphertext, header or key do not match: the data must not be used."""


def new_nonce_prefix() -> bytes:
    """A random per-stream nonce prefix."""
    return os.urandom(NONCE_PREFIX_BYTES)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index > MAX_CHUNKS:
        raise ValueError("stream too long for its chunk size")
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def _check(key: bytes, prefix: bytes, chunk_size: int) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise ValueError("AES-256 needs a 32-byte key")
    if len(prefix) != NONCE_PREFIX_BYTES:
        raise ValueError(f"nonce prefix must be {NONCE_PREFIX_BYTES} bytes")
    if chunk_size <= 0:
        raise ValueError("chunk size must be positive")
    return AESGCM(key)


def encrypt_chunks(
    key: bytes,
    nonce_prefix: bytes,
    aad: bytes,
    plaintext: Iterable[bytes],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[bytes]:
    """Yield the stored form (ciphertext + tag) of each chunk of ``plaintext``.

    ``plaintext`` may come in pieces of any size; it is re-cut into ``chunk_size``
    chunks. At most one chunk of plaintext is held in memory.
    """
    aead = _check(key, nonce_prefix, chunk_size)
    buffer = bytearray()
    index = 0
    for piece in plaintext:
        buffer += piece
        # Keep at least one byte back: only the final chunk may be flagged last, and
        # we cannot know a chunk is final until the input ends.
        while len(buffer) > chunk_size:
            chunk = bytes(buffer[:chunk_size])
            del buffer[:chunk_size]
            yield aead.encrypt(_nonce(nonce_prefix, index, False), chunk, aad)
            index += 1
    yield aead.encrypt(_nonce(nonce_prefix, index, True), bytes(buffer), aad)


def decrypt_chunks(
    key: bytes,
    nonce_prefix: bytes,
    aad: bytes,
    source: BinaryIO,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[bytes]:
    """Read stored chunks from ``source`` to its end and yield verified plaintext.

    Raises :class:`IntegrityError` at the first chunk that fails, including a stream
    that ends early or has bytes after its final chunk. Plaintext already yielded was
    authentic, but the caller must not *use* any of it unless the iteration completes
    (write to a temporary file, commit only at the end).
    """
    aead = _check(key, nonce_prefix, chunk_size)
    stored_size = chunk_size + TAG_BYTES
    index = 0
    current = source.read(stored_size)
    while True:
        following = source.read(stored_size) if len(current) == stored_size else b""
        last = not following
        if len(current) < TAG_BYTES:
            raise IntegrityError(f"stream truncated at chunk {index}")
        try:
            yield aead.decrypt(_nonce(nonce_prefix, index, last), current, aad)
        except InvalidTag:
            raise IntegrityError(
                f"chunk {index} failed authentication (tampered, truncated, reordered, "
                "wrong header or wrong key)"
            ) from None
        if last:
            return
        index += 1
        current = following


def ciphertext_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Stored size of a stream of ``plaintext_size`` bytes."""
    chunks = max(1, -(-plaintext_size // chunk_size))
    if plaintext_size and plaintext_size % chunk_size == 0:
        chunks = plaintext_size // chunk_size
    return plaintext_size + chunks * TAG_BYTES
