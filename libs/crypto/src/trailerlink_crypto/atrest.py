"""Encrypted-at-rest files for the trailer's spools.

Every object in a trailer spool is stored encrypted with the trailer's local spool key
(a 32-byte secret from a Kubernetes Secret file) so a stolen disk or a copied volume
reveals nothing. File layout (all integers big-endian)::

    magic        8 bytes   b"TLSPOOL" + version byte 0x01
    key_id_len   1 byte
    key_id       key_id_len bytes (ASCII) — which spool key; not secret
    salt         16 bytes  random per file
    nonce_prefix 7 bytes   random per file
    chunk_size   4 bytes
    body         chunked AES-256-GCM (trailerlink_crypto.chunked), aad = all bytes above

The per-file key is HKDF-SHA256(spool key, salt, info=b"trailerlink spool v1"), so no
two files share a key. Writes are durable (temp file, fsync, rename, fsync dir).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trailerlink_crypto.chunked import (
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    NONCE_PREFIX_BYTES,
    TAG_BYTES,
    IntegrityError,
    decrypt_chunks,
    encrypt_chunks,
    new_nonce_prefix,
)

MAGIC = b"TLSPOOL\x01"
SALT_BYTES = 16
_HKDF_INFO = b"trailerlink spool v1"


class UnknownKeyError(LookupError):
    """No key with the file's key id is loaded."""


@dataclass(frozen=True)
class SpoolKey:
    """A local at-rest key. ``key_id`` is derived from the key and is not secret."""

    key: bytes

    @property
    def key_id(self) -> str:
        return "spool-" + hashlib.sha256(b"trailerlink spool key id" + self.key).hexdigest()[:12]

    @classmethod
    def generate(cls) -> SpoolKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_file(cls, path: Path) -> SpoolKey:
        """Load a key file: 32 raw bytes, or their base64 (a Kubernetes Secret value)."""
        raw = Path(path).read_bytes()
        if len(raw) != KEY_BYTES:
            try:
                raw = base64.b64decode(raw.strip(), validate=True)
            except ValueError:
                raise ValueError(f"spool key file {path} is neither 32 bytes nor base64") from None
        if len(raw) != KEY_BYTES:
            raise ValueError(f"spool key file {path} does not hold a 32-byte key")
        return cls(raw)

    def write_file(self, path: Path) -> None:
        """Write the key as base64 with mode 0600 (development and tests)."""
        path.write_bytes(base64.b64encode(self.key) + b"\n")
        path.chmod(0o600)


class SpoolKeyring:
    """The current key (used for new files) plus older keys still able to read."""

    def __init__(self, current: SpoolKey, older: Iterable[SpoolKey] = ()) -> None:
        self.current = current
        self._by_id = {k.key_id: k for k in (current, *older)}

    def get(self, key_id: str) -> SpoolKey:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise UnknownKeyError(f"no spool key loaded with id {key_id}") from None


def _file_key(key: SpoolKey, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_HKDF_INFO).derive(
        key.key
    )


def _header(key_id: str, salt: bytes, prefix: bytes, chunk_size: int) -> bytes:
    kid = key_id.encode("ascii")
    return MAGIC + struct.pack(">B", len(kid)) + kid + salt + prefix + struct.pack(">I", chunk_size)


def encrypt_to_file(
    path: Path,
    plaintext: Iterable[bytes],
    key: SpoolKey,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt ``plaintext`` pieces into ``path`` durably; returns the stored size.

    When this returns the file is complete and fsynced (file and directory); if it
    raises, nothing is left under ``path``.
    """
    # Imported here so trailerlink_crypto stays usable without the service libs.
    from trailerlink_common.durable import AtomicFile

    salt, prefix = os.urandom(SALT_BYTES), new_nonce_prefix()
    header = _header(key.key_id, salt, prefix, chunk_size)
    stored = len(header)
    with AtomicFile(path) as out:
        out.write(header)
        for sealed in encrypt_chunks(_file_key(key, salt), prefix, header, plaintext, chunk_size):
            out.write(sealed)
            stored += len(sealed)
    return stored


class EncryptedFileWriter:
    """Push-style form of :func:`encrypt_to_file` for data that arrives in callbacks.

    ``write()`` pieces, then leave the ``with`` block to commit durably. Holds at most
    one chunk of plaintext in memory.
    """

    def __init__(self, path: Path, key: SpoolKey, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        from trailerlink_common.durable import AtomicFile

        self._atomic = AtomicFile(path)
        self._key = key
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._sealed = bytearray()
        self._index = 0
        self.stored_size = 0

    def __enter__(self) -> EncryptedFileWriter:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._out = self._atomic.__enter__()
        salt, self._prefix = os.urandom(SALT_BYTES), new_nonce_prefix()
        self._aad = _header(self._key.key_id, salt, self._prefix, self._chunk_size)
        self._aead = AESGCM(_file_key(self._key, salt))
        self._out.write(self._aad)
        self.stored_size = len(self._aad)
        return self

    def write(self, data: bytes | memoryview) -> None:
        # Whole chunks are sealed straight from ``data``: copying every byte into the
        # buffer first cost as much CPU as the encryption itself. A chunk is sealed only
        # once more data follows it, so the last one is always flagged last.
        size, buffer = self._chunk_size, self._buffer
        with memoryview(data).cast("B") as view:
            start, end = 0, len(view)
            if buffer:
                need = size - len(buffer)
                if end <= need:
                    buffer += view
                    return
                buffer += view[:need]
                start = need
                self._emit(buffer, last=False)
                buffer.clear()
            while end - start > size:
                self._emit(view[start : start + size], last=False)
                start += size
            buffer += view[start:]

    def start_writeback(self) -> None:
        """Ask the kernel to start writing what was written so far, without waiting.

        Not a commit (that is the fsync and rename on exit); it only leaves the final
        fsync less to do, which shortens the time a sender waits for its answer.
        """
        self._out.flush()
        os.posix_fadvise(self._out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)

    def _emit(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        nonce = self._prefix + struct.pack(">IB", self._index, 1 if last else 0)
        sealed_size = len(chunk) + TAG_BYTES
        encrypt_into = getattr(self._aead, "encrypt_into", None)  # cryptography >= 45
        if encrypt_into is None:
            self._out.write(self._aead.encrypt(nonce, bytes(chunk), self._aad))
        else:
            # One reused output buffer: a fresh megabyte per chunk (page faults and
            # all) made sealing three times slower than the cipher.
            if len(self._sealed) < sealed_size:
                self._sealed = bytearray(sealed_size)
            with memoryview(self._sealed)[:sealed_size] as out:
                encrypt_into(nonce, chunk, self._aad, out)
                self._out.write(out)
        self.stored_size += sealed_size
        self._index += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._emit(bytes(self._buffer), last=True)
        self._atomic.__exit__(exc_type, exc, tb)


def read_header(path: Path) -> tuple[str, int]:
    """(key id, header length) of an encrypted spool file, without decrypting."""
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 1)
        if len(head) < len(MAGIC) + 1 or head[: len(MAGIC)] != MAGIC:
            raise IntegrityError(f"{Path(path).name} is not a trailerlink spool file")
        kid_len = head[-1]
        kid = f.read(kid_len).decode("ascii", "replace")
    return kid, len(MAGIC) + 1 + kid_len + SALT_BYTES + NONCE_PREFIX_BYTES + 4


def decrypt_file(path: Path, keyring: SpoolKeyring) -> Iterator[bytes]:
    """Yield the verified plaintext of an encrypted spool file, chunk by chunk.

    Raises :class:`IntegrityError` on any tampering or truncation and
    :class:`UnknownKeyError` if the file's key is not in ``keyring``. Use the data only if
    the iteration completes.
    """
    key_id, header_len = read_header(path)
    key = keyring.get(key_id)
    with open(path, "rb") as f:
        header = f.read(header_len)
        base = len(MAGIC) + 1 + len(key_id)
        salt = header[base : base + SALT_BYTES]
        prefix = header[base + SALT_BYTES : base + SALT_BYTES + NONCE_PREFIX_BYTES]
        (chunk_size,) = struct.unpack(">I", header[-4:])
        if not 0 < chunk_size <= 64 * 1024 * 1024:
            raise IntegrityError("implausible chunk size in spool header")
        yield from decrypt_chunks(_file_key(key, salt), prefix, header, f, chunk_size)


def decrypt_to_bytes(path: Path, keyring: SpoolKeyring) -> bytes:
    """Whole plaintext of a (small) spool file; for tests and tools."""
    return b"".join(decrypt_file(path, keyring))
