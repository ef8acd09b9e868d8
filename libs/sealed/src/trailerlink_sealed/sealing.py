"""Sealing (the trailer's side): plan how to compress an object, then write it sealed.

:func:`seal` scans the object's DICOM header, plans (``_plan``) whether its pixel data
goes through the image codec frame by frame, is kept as encapsulated fragments, or the
whole object goes to zstd; streams the container records (``_container_body``, each
frame round-trip verified and the whole body checked against the source's SHA-256)
through AES-256-GCM chunks into a durable file; and on any failure of the pixel path
starts again as zstd (``_Fallback``).

The container body is built here rather than in :mod:`~trailerlink_sealed.container`
because it follows the plan and raises ``_Fallback``, both sealing policy: the container
module keeps only the record format that the writer and the reader share.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard
from trailerlink_common.durable import AtomicFile
from trailerlink_common.identifiers import is_uid
from trailerlink_crypto.chunked import (
    DEFAULT_CHUNK_SIZE,
    KEY_BYTES,
    encrypt_chunks,
    new_nonce_prefix,
)
from trailerlink_crypto.keys import RecipientKey

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
)
from trailerlink_sealed.dicomscan import (
    ITEM,
    SEQUENCE_DELIMITER,
    ScanError,
    ScanResult,
    scan,
)
from trailerlink_sealed.header import (
    _HPKE,
    _READ_PIECE,
    MAX_CHUNK_SIZE,
    _build_header,
    _wrap_info,
)
from trailerlink_sealed.stream import ByteStream, UnexpectedEnd

# The name sealing has always logged under (before the module was split out of
# sealed.py), so log lines and their filters do not change.
log = logging.getLogger("trailerlink_sealed.sealed")

CODEC_OPAQUE = "zstd"
CODEC_ENCAPSULATED = "raw+zstd"
_SUPPORTED_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_RCT", "YBR_ICT"}
)

Source = Path | str | Callable[[], Iterable[bytes]]
"""Where the original object comes from: a plain file, or a callable that returns a
fresh iterator of its bytes each time it is called (e.g. the spool's decrypting
reader). The sealer may read it more than once."""


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


# --- source and plan ------------------------------------------------------------------
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


# --- sealing ----------------------------------------------------------------------------
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


# --- container body ---------------------------------------------------------------------
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
