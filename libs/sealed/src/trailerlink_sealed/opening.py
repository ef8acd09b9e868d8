"""Opening (the data centre's side): unwrap the data key, decrypt, rebuild, verify.

:func:`open_sealed` streams the original's bytes out of a sealed object, every chunk
authenticated before use and the whole checked against the size and SHA-256 in the
header at the end; :func:`unseal_to_file` makes the result durable only once it is
verified. Apart from sealing because it changes for other reasons: what a reader
accepts and how it verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from trailerlink_common.durable import AtomicFile
from trailerlink_crypto.chunked import KEY_BYTES, IntegrityError, decrypt_chunks
from trailerlink_crypto.keys import OpeningKeyring

from trailerlink_sealed.container import read_container
from trailerlink_sealed.header import (
    _HPKE,
    _READ_PIECE,
    SealedHeader,
    _wrap_info,
    read_sealed_header,
)
from trailerlink_sealed.stream import ByteStream


class KeyUnwrapError(IntegrityError):
    """The data key does not unwrap: wrong private key for this key id, or a changed
    header."""


@dataclass(frozen=True)
class UnsealResult:
    """What :func:`unseal_to_file` wrote: the verified original, durable at ``path``."""

    path: Path
    header: SealedHeader
    size: int
    sha256: str


def _read_pieces(f: BinaryIO) -> Iterator[bytes]:
    while piece := f.read(_READ_PIECE):
        yield piece


def open_sealed(
    source: BinaryIO | Path | str, keys: OpeningKeyring
) -> Iterator[bytes | bytearray | memoryview]:
    """Yield the original object's bytes from a sealed object, verified.

    Every chunk is authenticated before its bytes are used, and at the end the size and
    SHA-256 (and the dataset SHA-256 when the header has it) of everything yielded are
    checked against the header. Raises :class:`SealedFormatError`, ``UnknownKeyError``
    (no private key with the header's key id), :class:`KeyUnwrapError` (the key does
    not unwrap the data key) or ``IntegrityError`` (tampered, truncated, reordered, or
    not reproducing the original). Bytes already yielded must be discarded unless the
    iteration completes: write them to a temporary file (:func:`unseal_to_file`). A
    piece is a ``bytearray`` where the container stored bytes raw and a ``memoryview``
    of the decoded frame for a pixel frame (no second copy of either).
    """
    if isinstance(source, Path | str):
        with open(source, "rb") as f:
            yield from open_sealed(f, keys)
        return
    header = read_sealed_header(source)
    key = keys.get(header.key_id)
    try:
        data_key = _HPKE.decrypt(
            header.wrapped_key, key.private_key, info=_wrap_info(header.key_id)
        )
    except (InvalidTag, ValueError):
        raise KeyUnwrapError(
            f"data key does not unwrap with key {header.key_id}: wrong private key or a "
            "changed header"
        ) from None
    if len(data_key) != KEY_BYTES:
        raise KeyUnwrapError("unwrapped data key has the wrong length")
    plaintext = decrypt_chunks(data_key, header.nonce_prefix, header.raw, source, header.chunk_size)
    file_hash = hashlib.sha256()
    dataset_hash = hashlib.sha256()
    size = 0
    ds_offset = header.dataset_offset
    for piece in read_container(ByteStream(plaintext, hashed=False)):
        file_hash.update(piece)
        if ds_offset is not None:
            start = max(0, ds_offset - size)
            if start < len(piece):
                dataset_hash.update(memoryview(piece)[start:])
        size += len(piece)
        if size > header.original_size:
            raise IntegrityError("object is longer than its header says")
        yield piece
    if size != header.original_size or file_hash.hexdigest() != header.original_sha256:
        raise IntegrityError("reconstructed object does not match its size and SHA-256")
    if header.dataset_sha256 is not None and dataset_hash.hexdigest() != header.dataset_sha256:
        raise IntegrityError("reconstructed dataset does not match its SHA-256")


def unseal_to_file(source: BinaryIO | Path | str, dest: Path, keys: OpeningKeyring) -> UnsealResult:
    """Open a sealed object into ``dest``: present and durable only if fully verified.

    Raises what :func:`open_sealed` raises; on any error nothing is left at ``dest``.
    """
    if isinstance(source, Path | str):
        with open(source, "rb") as f:
            return unseal_to_file(f, dest, keys)
    start = source.tell()
    header = read_sealed_header(source)
    source.seek(start)
    digest = hashlib.sha256()
    size = 0
    with AtomicFile(Path(dest)) as out:
        for piece in open_sealed(source, keys):
            out.write(piece)
            digest.update(piece)
            size += len(piece)
    return UnsealResult(Path(dest), header, size, digest.hexdigest())


def unseal_to_bytes(source: BinaryIO | Path | str, keys: OpeningKeyring) -> bytes:
    """The verified original as bytes (small objects, tests and tools)."""
    return b"".join(open_sealed(source, keys))
