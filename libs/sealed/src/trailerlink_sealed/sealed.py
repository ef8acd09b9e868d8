"""Sealed object format v1: write (trailer) and open (data centre).

A sealed object is a header followed by the container (``container.py``) encrypted in
fixed-size AES-256-GCM chunks (``trailerlink_crypto.chunked``, the STREAM
construction) under a random per-object data key; the data key is wrapped for one
data-centre X25519 key with HPKE (``keys.py``). The whole header is the associated data
of every chunk, so a changed header byte fails the first chunk. docs/sealed-format.md
is the byte-level specification; this module is its reference implementation.

The trailer calls :func:`seal`; the ingest calls :func:`open_sealed` or
:func:`unseal_to_file`. Both stream in bounded memory (one frame, or one chunk, at a
time).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from trailerlink_common.durable import AtomicFile
from trailerlink_common.identifiers import is_uid
from trailerlink_crypto.chunked import (
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    NONCE_PREFIX_BYTES,
    IntegrityError,
    decrypt_chunks,
    encrypt_chunks,
    new_nonce_prefix,
)
from trailerlink_crypto.keys import OpeningKeyring, RecipientKey

from trailerlink_sealed import codecs
from trailerlink_sealed.container import (
    CONTAINER_MAGIC,
    RECORD_FRAME,
    RECORD_RAW,
    RECORD_ZSTD,
    ZSTD_BLOCK_BYTES,
    FrameLayout,
    RoundTripError,
    ZstdBlocks,
    encode_frame,
    end_record,
    raw_records,
    read_container,
)
from trailerlink_sealed.dicomscan import (
    ITEM,
    SEQUENCE_DELIMITER,
    ScanError,
    ScanResult,
    scan,
)
from trailerlink_sealed.stream import ByteStream, UnexpectedEnd

log = logging.getLogger(__name__)

MAGIC = b"TLSEAL"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
KEY_WRAP_ALGORITHM = "HPKE-v1-base-X25519-HKDF-SHA256-AES-256-GCM"
BODY_ALGORITHM = "AES-256-GCM-STREAM-v1"
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_WRAP_INFO = b"trailerlink sealed v1 data key\x00"
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

CODEC_OPAQUE = "zstd"
CODEC_ENCAPSULATED = "raw+zstd"
_SUPPORTED_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_RCT", "YBR_ICT"}
)

Source = Path | str | Callable[[], Iterable[bytes]]
"""Where the original object comes from: a plain file, or a callable that returns a
fresh iterator of its bytes each time it is called (e.g. the spool's decrypting
reader). The sealer may read it more than once."""


class SealedFormatError(IntegrityError):
    """Not a sealed object of a version this reader knows, or a malformed header."""


class KeyUnwrapError(IntegrityError):
    """The data key does not unwrap: wrong private key for this key id, or a changed
    header."""


class SourceMismatchError(Exception):
    """The object read does not have the size or SHA-256 the caller said it has."""


@dataclass(frozen=True)
class SealOptions:
    """How to seal. ``pixel_codec``: "jpegls" (best ratio) or "htj2k" (faster)."""

    pixel_codec: str = "jpegls"
    zstd_level: int = 6
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_frame_bytes: int = 256 * 1024 * 1024
    header_limit: int = 16 * 1024 * 1024
    producer: str = ""

    def __post_init__(self) -> None:
        if self.pixel_codec not in codecs.CODECS_BY_NAME:
            raise ValueError(
                f"unknown pixel codec {self.pixel_codec!r}; "
                f"choose from {sorted(codecs.CODECS_BY_NAME)}"
            )
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError("chunk size out of range")


@dataclass(frozen=True)
class SealResult:
    """What :func:`seal` wrote. ``dest`` is durable (fsynced) when this exists."""

    path: Path
    codec: str
    key_id: str
    original_size: int
    original_sha256: str
    dataset_offset: int | None
    dataset_sha256: str | None
    sealed_size: int
    sealed_sha256: str
    frames: int
    fallback: str | None
    """Why an image codec was wanted but not used (None when it was, or not wanted)."""
    fallback_kind: str | None
    """``round_trip``, ``codec_error`` or ``unsupported``; None without a fallback."""
    sop_instance_uid: str
    seconds: float

    @property
    def ratio(self) -> float:
        """Original size / sealed size."""
        return self.original_size / self.sealed_size if self.sealed_size else 0.0


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


# --- header ---------------------------------------------------------------------------
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


# --- sealing ----------------------------------------------------------------------------
def _open_source(source: Source) -> Iterator[bytes]:
    if callable(source):
        return iter(source())
    path = Path(source)

    def pieces() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while piece := f.read(_READ_PIECE):
                yield piece

    return pieces()


@dataclass
class _Plan:
    kind: str  # frames | encapsulated | opaque
    codec: str
    layout: FrameLayout | None = None
    frames: int = 0
    fallback: str | None = None
    fallback_kind: str | None = None


class _Fallback(Exception):
    """Abandon this attempt and seal the whole object with zstd instead."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


def _layout(found: ScanResult, max_frame_bytes: int) -> tuple[FrameLayout | None, str]:
    """The frame layout of native pixel data, or (None, why it is not supported)."""
    a = found.attributes
    needed = {
        "rows": a.rows,
        "columns": a.columns,
        "bits allocated": a.bits_allocated,
        "bits stored": a.bits_stored,
    }
    absent = [name for name, value in needed.items() if not value]
    if absent:
        return None, "missing " + ", ".join(absent)
    assert a.rows and a.columns and a.bits_allocated and a.bits_stored
    samples = a.samples_per_pixel or 1
    high_bit = a.high_bit if a.high_bit is not None else a.bits_stored - 1
    photometric = (a.photometric_interpretation or "MONOCHROME2").upper()
    if a.bits_allocated not in (8, 16):
        return None, f"bits allocated {a.bits_allocated}"
    if not 2 <= a.bits_stored <= a.bits_allocated:
        return None, f"bits stored {a.bits_stored}"
    if not a.bits_stored - 1 <= high_bit < a.bits_allocated:
        return None, f"high bit {high_bit}"
    if samples not in (1, 3) or (a.planar_configuration or 0) not in (0, 1):
        return None, f"samples per pixel {samples}"
    if (a.pixel_representation or 0) not in (0, 1):
        return None, "pixel representation"
    if photometric not in _SUPPORTED_PHOTOMETRIC:
        return None, f"photometric interpretation {photometric}"
    layout = FrameLayout(
        rows=a.rows,
        columns=a.columns,
        samples=samples,
        bits_allocated=a.bits_allocated,
        bits_stored=a.bits_stored,
        shift=high_bit + 1 - a.bits_stored,
        signed=a.pixel_representation == 1,
        planar=samples > 1 and a.planar_configuration == 1,
        big_endian=not found.little_endian and a.bits_allocated == 16,
    )
    if layout.frame_bytes > max_frame_bytes:
        return None, f"frame of {layout.frame_bytes} bytes exceeds the frame limit"
    return layout, ""


def _plan(found: ScanResult | None, scan_error: str, options: SealOptions) -> _Plan:
    if found is None:
        return _Plan(
            "opaque",
            CODEC_OPAQUE,
            fallback=None if scan_error == "not a DICOM Part 10 file" else scan_error,
            fallback_kind=None if scan_error == "not a DICOM Part 10 file" else "unsupported",
        )
    if not found.has_pixel_data:
        return _Plan("opaque", CODEC_OPAQUE)
    if found.pixel_value_length is None:
        return _Plan("encapsulated", CODEC_ENCAPSULATED)
    layout, why = _layout(found, options.max_frame_bytes)
    if layout is None:
        return _Plan(
            "opaque",
            CODEC_OPAQUE,
            fallback=f"unsupported pixel layout: {why}",
            fallback_kind="unsupported",
        )
    frames = found.pixel_value_length // layout.frame_bytes
    if frames == 0:
        return _Plan(
            "opaque",
            CODEC_OPAQUE,
            fallback="pixel data shorter than one frame",
            fallback_kind="unsupported",
        )
    return _Plan("frames", f"{options.pixel_codec}+zstd", layout, frames)


def _encapsulated_records(stream: ByteStream, little: bool) -> Iterator[bytes]:
    """``R`` records for encapsulated pixel data, through its sequence delimiter."""
    fmt = "<HHI" if little else ">HHI"
    pending = bytearray()
    while True:
        head = stream.read_exact(8)
        group, element, length = struct.unpack(fmt, head)
        tag = (group << 16) | element
        pending += head
        if tag == SEQUENCE_DELIMITER:
            break
        if tag != ITEM or length == 0xFFFFFFFF:
            raise _Fallback("encapsulated pixel data is not a sequence of items", "unsupported")
        while length:
            piece = stream.read_exact(min(length, ZSTD_BLOCK_BYTES))
            length -= len(piece)
            pending += piece
            if len(pending) >= ZSTD_BLOCK_BYTES:
                yield from raw_records(bytes(pending))
                pending.clear()
    if pending:
        yield from raw_records(bytes(pending))


def _measure(source: Source, header_limit: int) -> tuple[int, str, int | None, str | None]:
    """(size, SHA-256, dataset offset, dataset SHA-256) of the source, in one pass."""
    stream = ByteStream(_open_source(source))
    try:
        scan(stream, header_limit)
    except ScanError:
        pass
    for _ in stream.iter_rest(_READ_PIECE):
        pass
    dataset_sha = stream.dataset_hash.hexdigest() if stream.dataset_hash else None
    return stream.position, stream.file_hash.hexdigest(), stream.dataset_offset, dataset_sha


def seal(
    source: Source,
    dest: Path,
    recipient: RecipientKey,
    *,
    options: SealOptions | None = None,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    expected_dataset_sha256: str | None = None,
    overwrite: bool = True,
) -> SealResult:
    """Compress ``source`` losslessly and seal it for ``recipient`` into ``dest``.

    When this returns, ``dest`` is complete and durable (file and directory fsynced);
    when it raises, nothing is left at ``dest``. Pixel frames go through the image codec
    and are each decoded again and compared byte for byte before they are written; if
    any frame does not reproduce, or the pixel layout is one the codecs cannot take, the
    whole object is sealed as zstd instead (``SealResult.fallback`` says why). The
    output never depends on the codec being right.

    The header carries the original size and SHA-256. Pass them as ``expected_*`` when
    known (the gateway's event has them): they are then checked against what was read,
    and :class:`SourceMismatchError` is raised if they differ. Without them the source
    is read once more up front to compute them.

    With ``overwrite=False`` an existing ``dest`` is never replaced: if one appears
    while sealing (another writer was first), ``FileExistsError`` is raised and the
    other writer's object stands.

    Raises ``OSError`` for I/O failures and :class:`SourceMismatchError`.
    """
    options = options or SealOptions()
    started = time.perf_counter()
    if expected_size is None or expected_sha256 is None:
        expected_size, expected_sha256, _, measured_dataset = _measure(source, options.header_limit)
        expected_dataset_sha256 = expected_dataset_sha256 or measured_dataset
    try:
        return _seal_once(
            source,
            dest,
            recipient,
            options,
            expected_size,
            expected_sha256,
            expected_dataset_sha256,
            None,
            started,
            overwrite,
        )
    except _Fallback as fallback:
        log.warning(
            "pixel codec not used; sealing as zstd",
            extra={"reason": str(fallback), "kind": fallback.kind},
        )
        return _seal_once(
            source,
            dest,
            recipient,
            options,
            expected_size,
            expected_sha256,
            expected_dataset_sha256,
            fallback,
            started,
            overwrite,
        )


def _seal_once(
    source: Source,
    dest: Path,
    recipient: RecipientKey,
    options: SealOptions,
    expected_size: int,
    expected_sha256: str,
    expected_dataset_sha256: str | None,
    forced: _Fallback | None,
    started: float,
    overwrite: bool,
) -> SealResult:
    stream = ByteStream(_open_source(source))
    stream.start_capture()
    found: ScanResult | None = None
    scan_error = ""
    try:
        found = scan(stream, options.header_limit)
    except ScanError as exc:
        scan_error = str(exc)
    prefix = stream.take_capture()
    plan = _plan(found, scan_error, options)
    if forced is not None:
        plan = _Plan("opaque", CODEC_OPAQUE, fallback=str(forced), fallback_kind=forced.kind)
    dataset_offset = found.dataset_offset if found else None
    sop_uid = (found.attributes.sop_instance_uid or "") if found else ""

    data_key = os.urandom(KEY_BYTES)
    nonce_prefix = new_nonce_prefix()
    wrapped = _HPKE.encrypt(data_key, recipient.public_key, info=_wrap_info(recipient.key_id))
    params = f"container=1;zstd_level={options.zstd_level}"
    if plan.kind == "frames":
        params += f";frames={plan.frames}"
    header = _build_header(
        codec=plan.codec,
        codec_params=params,
        original_size=expected_size,
        original_sha256=expected_sha256,
        dataset_offset=dataset_offset if expected_dataset_sha256 else None,
        dataset_sha256=expected_dataset_sha256,
        key_id=recipient.key_id,
        wrapped_key=wrapped,
        chunk_size=options.chunk_size,
        nonce_prefix=nonce_prefix,
        sop_instance_uid=sop_uid if is_uid(sop_uid) else "",
        producer=options.producer,
    )
    zstd = ZstdBlocks(options.zstd_level)
    residual_compressor = zstandard.ZstdCompressor(
        level=3, write_checksum=True, write_content_size=True
    )
    frame_codec = codecs.CODECS_BY_NAME[options.pixel_codec]
    tuning = codecs.Tuning()

    reproduced = _Reproduced()
    body = _container_body(
        stream,
        prefix,
        plan,
        found,
        zstd,
        frame_codec,
        residual_compressor,
        tuning,
        reproduced,
        forced,
    )

    sealed_hash = hashlib.sha256()
    sealed_size = 0
    with AtomicFile(Path(dest), overwrite=overwrite) as out:
        out.write(header)
        sealed_hash.update(header)
        sealed_size += len(header)
        for chunk in encrypt_chunks(data_key, nonce_prefix, header, body, options.chunk_size):
            out.write(chunk)
            sealed_hash.update(chunk)
            sealed_size += len(chunk)
        # Still inside the block: a mismatch leaves no file behind.
        got_sha = stream.file_hash.hexdigest()
        got_dataset = stream.dataset_hash.hexdigest() if stream.dataset_hash else None
        if stream.position != expected_size or got_sha != expected_sha256:
            raise SourceMismatchError(
                f"source has {stream.position} bytes, SHA-256 {got_sha[:16]}…; expected "
                f"{expected_size} bytes, {expected_sha256[:16]}…"
            )
        if expected_dataset_sha256 and got_dataset != expected_dataset_sha256:
            raise SourceMismatchError("source dataset SHA-256 differs from the expected one")
    return SealResult(
        path=Path(dest),
        codec=plan.codec,
        key_id=recipient.key_id,
        original_size=expected_size,
        original_sha256=expected_sha256,
        dataset_offset=dataset_offset,
        dataset_sha256=got_dataset,
        sealed_size=sealed_size,
        sealed_sha256=sealed_hash.hexdigest(),
        frames=plan.frames if plan.kind == "frames" else 0,
        fallback=plan.fallback,
        fallback_kind=plan.fallback_kind,
        sop_instance_uid=sop_uid,
        seconds=time.perf_counter() - started,
    )


# --- opening ------------------------------------------------------------------------------
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


class _Reproduced:
    """What the records reproduce, recomputed from the records themselves (zstd records
    decompressed again, frames as their own round trip verified them): checked against
    the source's SHA-256 before the sealed object is committed."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self._decompressor = zstandard.ZstdDecompressor()

    def emit(self, rec: bytes, frame: bytes | bytearray | None = None) -> bytes:
        kind = rec[0]
        if kind == RECORD_ZSTD:
            self.hash.update(self._decompressor.decompress(rec[5:]))
        elif kind == RECORD_RAW:
            self.hash.update(memoryview(rec)[5:])
        elif kind == RECORD_FRAME:
            assert frame is not None
            self.hash.update(frame)
        return rec


def _frame_records(
    stream: ByteStream,
    plan: _Plan,
    found: ScanResult,
    zstd: ZstdBlocks,
    frame_codec: codecs.FrameCodec,
    residual_compressor: zstandard.ZstdCompressor,
    tuning: codecs.Tuning,
    reproduced: _Reproduced,
) -> Iterator[bytes]:
    """The pixel data frame by frame (each round-trip verified by the codec), then what
    follows the frames inside the pixel element; any failure of the pixel path becomes
    a :class:`_Fallback` to zstd."""
    assert plan.layout is not None and found.pixel_value_length is not None
    for _ in range(plan.frames):
        raw = stream.read_exact(plan.layout.frame_bytes)
        try:
            rec = encode_frame(raw, plan.layout, frame_codec, residual_compressor, tuning)
        except RoundTripError as exc:
            raise _Fallback(str(exc), "round_trip") from None
        except codecs.CodecError as exc:
            raise _Fallback(str(exc), "codec_error") from None
        except (ValueError, TypeError, IndexError) as exc:
            # A safety net: whatever goes wrong in the pixel path costs compression,
            # never the object. (Source integrity errors are not among these and still
            # propagate.)
            raise _Fallback(f"pixel path failed: {type(exc).__name__}", "codec_error") from None
        yield reproduced.emit(rec, raw)
        del raw, rec
    tail = found.pixel_value_length - plan.frames * plan.layout.frame_bytes
    for rec in zstd.stream_records(stream, tail):
        yield reproduced.emit(rec)


def _container_body(
    stream: ByteStream,
    prefix: bytes,
    plan: _Plan,
    found: ScanResult | None,
    zstd: ZstdBlocks,
    frame_codec: codecs.FrameCodec,
    residual_compressor: zstandard.ZstdCompressor,
    tuning: codecs.Tuning,
    reproduced: _Reproduced,
    forced: _Fallback | None,
) -> Iterator[bytes]:
    """The container's plaintext records: the header bytes before the pixel data, the
    pixel data as ``plan`` says, the rest, and the end record — after checking that the
    records reproduce the source byte for byte."""
    yield CONTAINER_MAGIC
    for rec in zstd.records(prefix):
        yield reproduced.emit(rec)
    try:
        if plan.kind == "frames":
            assert found is not None
            yield from _frame_records(
                stream, plan, found, zstd, frame_codec, residual_compressor, tuning, reproduced
            )
        elif plan.kind == "encapsulated":
            assert found is not None
            for rec in _encapsulated_records(stream, found.little_endian):
                yield reproduced.emit(rec)
    except UnexpectedEnd as exc:
        raise _Fallback(f"object ends inside its pixel data: {exc}", "unsupported") from None
    for rec in zstd.stream_records(stream):
        yield reproduced.emit(rec)
    if reproduced.hash.digest() != stream.file_hash.digest():
        if forced is None:
            raise _Fallback("container does not reproduce the source", "round_trip")
        raise RuntimeError("zstd container does not reproduce the source")
    yield end_record(stream.position)
