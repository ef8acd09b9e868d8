"""The sealed object header, format v1: its constants, building it and parsing it.

A sealed object starts with ``MAGIC``, the version, flags and total header length,
then tag-length-value fields (docs/sealed-format.md, "Header"). The header carries what
a reader needs before any key: the codec, the original's size and SHA-256, the key id
and the HPKE-wrapped data key, the chunk size and nonce prefix. The exact header bytes
are the associated data of every body chunk, so a changed header byte fails the first
chunk.

Here because both directions need it: :mod:`~trailerlink_sealed.sealing` builds the
header and wraps the data key (``_HPKE``, ``_wrap_info``),
:mod:`~trailerlink_sealed.opening` parses it and unwraps the key, and tools read it
without any key (:func:`read_sealed_header`). A new header field or format version
changes this module and no other.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import hpke
from trailerlink_crypto.chunked import NONCE_PREFIX_BYTES, IntegrityError

MAGIC = b"TLSEAL"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
KEY_WRAP_ALGORITHM = "HPKE-v1-base-X25519-HKDF-SHA256-AES-256-GCM"
BODY_ALGORITHM = "AES-256-GCM-STREAM-v1"
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_WRAP_INFO = b"trailerlink sealed v1 data key\x00"
# How much of a file sealing and opening read at a time; here, with the other constants
# both share.
_READ_PIECE = 1024 * 1024

# Header field tags. Tags below 0x80 are critical: a reader that does not know one must
# refuse the object. Tags from 0x80 up are informational and may be skipped.
F_CODEC = 0x01
F_CODEC_PARAMS = 0x02
F_ORIGINAL_SIZE = 0x03
F_ORIGINAL_SHA256 = 0x04
F_DATASET_OFFSET = 0x05
F_DATASET_SHA256 = 0x06
F_KEY_ID = 0x10
F_KEY_WRAP = 0x11
F_WRAPPED_KEY = 0x12
F_CHUNK_SIZE = 0x13
F_NONCE_PREFIX = 0x14
F_BODY_ALGORITHM = 0x15
F_SOP_INSTANCE_UID = 0x80
F_CREATED_AT = 0x81
F_PRODUCER = 0x82
_REQUIRED = (
    F_CODEC,
    F_ORIGINAL_SIZE,
    F_ORIGINAL_SHA256,
    F_KEY_ID,
    F_KEY_WRAP,
    F_WRAPPED_KEY,
    F_CHUNK_SIZE,
    F_NONCE_PREFIX,
    F_BODY_ALGORITHM,
)
_KNOWN = frozenset({*_REQUIRED, F_CODEC_PARAMS, F_DATASET_OFFSET, F_DATASET_SHA256})


class SealedFormatError(IntegrityError):
    """Not a sealed object of a version this reader knows, or a malformed header."""


@dataclass(frozen=True)
class SealedHeader:
    """A parsed sealed header. ``raw`` is the exact header bytes (the chunks' AAD)."""

    raw: bytes
    codec: str
    codec_params: str
    original_size: int
    original_sha256: str
    dataset_offset: int | None
    dataset_sha256: str | None
    key_id: str
    key_wrap: str
    wrapped_key: bytes
    chunk_size: int
    nonce_prefix: bytes
    sop_instance_uid: str = ""
    created_at_ms: int = 0
    producer: str = ""
    unknown_optional: tuple[int, ...] = field(default=())


def _field(tag: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("header field too long")
    return struct.pack(">BH", tag, len(value)) + value


def _wrap_info(key_id: str) -> bytes:
    return _WRAP_INFO + key_id.encode("ascii")


def _build_header(
    *,
    codec: str,
    codec_params: str,
    original_size: int,
    original_sha256: str,
    dataset_offset: int | None,
    dataset_sha256: str | None,
    key_id: str,
    wrapped_key: bytes,
    chunk_size: int,
    nonce_prefix: bytes,
    sop_instance_uid: str,
    producer: str,
) -> bytes:
    fields = [
        _field(F_CODEC, codec.encode("ascii")),
        _field(F_CODEC_PARAMS, codec_params.encode("ascii")),
        _field(F_ORIGINAL_SIZE, struct.pack(">Q", original_size)),
        _field(F_ORIGINAL_SHA256, bytes.fromhex(original_sha256)),
    ]
    if dataset_offset is not None and dataset_sha256:
        fields.append(_field(F_DATASET_OFFSET, struct.pack(">Q", dataset_offset)))
        fields.append(_field(F_DATASET_SHA256, bytes.fromhex(dataset_sha256)))
    fields += [
        _field(F_KEY_ID, key_id.encode("ascii")),
        _field(F_KEY_WRAP, KEY_WRAP_ALGORITHM.encode("ascii")),
        _field(F_WRAPPED_KEY, wrapped_key),
        _field(F_CHUNK_SIZE, struct.pack(">I", chunk_size)),
        _field(F_NONCE_PREFIX, nonce_prefix),
        _field(F_BODY_ALGORITHM, BODY_ALGORITHM.encode("ascii")),
    ]
    if sop_instance_uid:
        fields.append(_field(F_SOP_INSTANCE_UID, sop_instance_uid.encode("ascii")))
    fields.append(_field(F_CREATED_AT, struct.pack(">Q", int(time.time() * 1000))))
    if producer:
        fields.append(_field(F_PRODUCER, producer.encode("ascii", "replace")))
    body = b"".join(fields)
    total = len(MAGIC) + 2 + 4 + len(body)
    return MAGIC + struct.pack(">BBI", FORMAT_VERSION, 0, total) + body


def read_sealed_header(source: BinaryIO | Path | str) -> SealedHeader:
    """Parse the header of a sealed object without any key.

    Leaves a file object positioned at the first body byte. Raises
    :class:`SealedFormatError` for a wrong magic or version, a malformed or oversized
    header, a missing required field or an unknown critical field.
    """
    if isinstance(source, Path | str):
        with open(source, "rb") as f:
            return read_sealed_header(f)
    fixed = source.read(12)
    if len(fixed) < 12 or fixed[:6] != MAGIC:
        raise SealedFormatError("not a trailerlink sealed object")
    version, flags, total = struct.unpack(">BBI", fixed[6:12])
    if version != FORMAT_VERSION or flags != 0:
        raise SealedFormatError(
            f"sealed format version {version} (flags {flags}) is not "
            f"supported by this reader (v{FORMAT_VERSION})"
        )
    if not 12 <= total <= MAX_HEADER_BYTES:
        raise SealedFormatError("implausible sealed header length")
    rest = source.read(total - 12)
    if len(rest) != total - 12:
        raise SealedFormatError("sealed header truncated")
    values: dict[int, bytes] = {}
    unknown: list[int] = []
    pos = 0
    while pos < len(rest):
        if pos + 3 > len(rest):
            raise SealedFormatError("sealed header field truncated")
        tag, length = struct.unpack_from(">BH", rest, pos)
        pos += 3
        value = rest[pos : pos + length]
        if len(value) != length:
            raise SealedFormatError("sealed header field overruns the header")
        pos += length
        if tag in values:
            raise SealedFormatError(f"sealed header field {tag:#04x} repeated")
        if tag < 0x80 and tag not in _KNOWN:
            raise SealedFormatError(f"unknown critical header field {tag:#04x}")
        if tag >= 0x80 and tag not in (F_SOP_INSTANCE_UID, F_CREATED_AT, F_PRODUCER):
            unknown.append(tag)
        values[tag] = value
    missing = [t for t in _REQUIRED if t not in values]
    if missing:
        raise SealedFormatError(f"sealed header lacks fields {[hex(t) for t in missing]}")
    try:
        header = SealedHeader(
            raw=fixed + rest,
            codec=values[F_CODEC].decode("ascii"),
            codec_params=values.get(F_CODEC_PARAMS, b"").decode("ascii"),
            original_size=struct.unpack(">Q", values[F_ORIGINAL_SIZE])[0],
            original_sha256=_sha(values[F_ORIGINAL_SHA256]),
            dataset_offset=(
                struct.unpack(">Q", values[F_DATASET_OFFSET])[0]
                if F_DATASET_OFFSET in values
                else None
            ),
            dataset_sha256=(_sha(values[F_DATASET_SHA256]) if F_DATASET_SHA256 in values else None),
            key_id=values[F_KEY_ID].decode("ascii"),
            key_wrap=values[F_KEY_WRAP].decode("ascii"),
            wrapped_key=values[F_WRAPPED_KEY],
            chunk_size=struct.unpack(">I", values[F_CHUNK_SIZE])[0],
            nonce_prefix=values[F_NONCE_PREFIX],
            sop_instance_uid=values.get(F_SOP_INSTANCE_UID, b"").decode("ascii", "replace"),
            created_at_ms=(
                struct.unpack(">Q", values[F_CREATED_AT])[0]
                if len(values.get(F_CREATED_AT, b"")) == 8
                else 0
            ),
            producer=values.get(F_PRODUCER, b"").decode("ascii", "replace"),
            unknown_optional=tuple(unknown),
        )
    except (struct.error, UnicodeDecodeError, ValueError):
        raise SealedFormatError("sealed header field has the wrong size or encoding") from None
    if (F_DATASET_OFFSET in values) != (F_DATASET_SHA256 in values):
        raise SealedFormatError("dataset offset and dataset SHA-256 come together")
    if header.key_wrap != KEY_WRAP_ALGORITHM:
        raise SealedFormatError(f"unsupported key wrap {header.key_wrap!r}")
    if values[F_BODY_ALGORITHM].decode("ascii", "replace") != BODY_ALGORITHM:
        raise SealedFormatError("unsupported body algorithm")
    if not 0 < header.chunk_size <= MAX_CHUNK_SIZE:
        raise SealedFormatError("implausible chunk size")
    if len(header.nonce_prefix) != NONCE_PREFIX_BYTES:
        raise SealedFormatError("nonce prefix has the wrong length")
    return header


def _sha(value: bytes) -> str:
    if len(value) != 32:
        raise ValueError("SHA-256 field must be 32 bytes")
    return value.hex()
