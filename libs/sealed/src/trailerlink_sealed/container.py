"""The lossless container: the original file as a sequence of self-describing records.

Plaintext layout (docs/sealed-format.md, "Container")::

    b"TLC\\x01"
    record*            type (1 byte) || payload length (u32, big-endian) || payload
    END record         b"E" || 8 || total output length (u64)

Record types and what each appends to the output:

* ``Z`` one zstd frame (content size and checksum present): its decompressed bytes.
* ``R`` raw bytes, appended as they are (already-compressed pixel fragments).
* ``F`` one image frame: a JPEG-LS or HTJ2K codestream of the sample values plus an
  optional zstd residual; appends the frame's pixel bytes exactly as the original had
  them (bits above High Bit, below the stored bits, byte order, sign extension).

Concatenating what the records append gives back the original file byte for byte.
The writer checks every frame record by decoding it with the same function the reader
uses before it lets the record out (:class:`RoundTripError` if the bytes differ), so
a record that would not reproduce its frame is never written.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import zstandard
from trailerlink_crypto.chunked import IntegrityError

from trailerlink_sealed import codecs
from trailerlink_sealed.codecs import CodecError, FrameCodec
from trailerlink_sealed.stream import ByteStream, UnexpectedEnd

CONTAINER_MAGIC = b"TLC\x01"
RECORD_ZSTD = ord("Z")
RECORD_RAW = ord("R")
RECORD_FRAME = ord("F")
RECORD_END = ord("E")
_RECORD_HEAD = struct.Struct(">BI")
# Frame record header: codec, flags, bits allocated, bits stored, shift, samples,
# reserved (2), rows, columns, codestream length.
_FRAME_HEAD = struct.Struct(">BBBBBBHIII")
FLAG_BIG_ENDIAN = 0x01
FLAG_SIGNED = 0x02
FLAG_PLANAR = 0x04
FLAG_RESIDUAL = 0x08
_KNOWN_FLAGS = FLAG_BIG_ENDIAN | FLAG_SIGNED | FLAG_PLANAR | FLAG_RESIDUAL

ZSTD_BLOCK_BYTES = 4 * 1024 * 1024
"""Original bytes per zstd record: bounds memory on both sides."""
MAX_RECORD_OUTPUT = 512 * 1024 * 1024
"""A reader refuses a record that would append more than this (bounded memory)."""
SMALL_BLOCK_BYTES = 256 * 1024
"""zstd blocks up to this size (headers) are compressed at the maximum level."""


class RoundTripError(Exception):
    """A frame record did not reproduce its frame: the object must not use the codec."""


class ContainerError(IntegrityError):
    """The container is malformed (after decryption succeeded: a writer bug or a
    forged object)."""


@dataclass(frozen=True)
class FrameLayout:
    """How the sample values of one frame sit in the original bytes."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int  # 8 or 16
    bits_stored: int
    shift: int  # High Bit + 1 - Bits Stored
    signed: bool
    planar: bool
    big_endian: bool

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.samples * (self.bits_allocated // 8)

    @property
    def word_dtype(self) -> np.dtype:
        if self.bits_allocated == 8:
            return np.dtype(np.uint8)
        return np.dtype(">u2" if self.big_endian else "<u2")

    def image_shape(self) -> tuple[int, ...]:
        if self.samples == 1:
            return (self.rows, self.columns)
        if self.planar:
            return (self.samples, self.rows, self.columns)
        return (self.rows, self.columns, self.samples)


# --- records -------------------------------------------------------------------------
def record(kind: int, payload: bytes) -> bytes:
    """One serialized record."""
    return _RECORD_HEAD.pack(kind, len(payload)) + payload


def end_record(total_length: int) -> bytes:
    return record(RECORD_END, struct.pack(">Q", total_length))


class ZstdBlocks:
    """Compresses original bytes into independent zstd records of bounded size."""

    def __init__(self, level: int) -> None:
        self._bulk = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True
        )
        self._small = zstandard.ZstdCompressor(
            level=19, write_checksum=True, write_content_size=True
        )

    def records(self, data: bytes | bytearray) -> Iterator[bytes]:
        """Zero or more ``Z`` records that append ``data``."""
        view = memoryview(data)
        for start in range(0, len(view), ZSTD_BLOCK_BYTES):
            block = view[start : start + ZSTD_BLOCK_BYTES]
            compressor = self._small if len(block) <= SMALL_BLOCK_BYTES else self._bulk
            yield record(RECORD_ZSTD, compressor.compress(block))

    def stream_records(self, stream: ByteStream, length: int | None = None) -> Iterator[bytes]:
        """``Z`` records for the next ``length`` bytes of ``stream`` (None: all the rest)."""
        remaining = length
        while remaining is None or remaining > 0:
            want = ZSTD_BLOCK_BYTES if remaining is None else min(remaining, ZSTD_BLOCK_BYTES)
            data = stream.read(want)
            if not data:
                if remaining:
                    raise UnexpectedEnd(f"stream ended {remaining} bytes early")
                return
            if remaining is not None:
                remaining -= len(data)
            yield from self.records(data)


def raw_records(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), ZSTD_BLOCK_BYTES):
        yield record(RECORD_RAW, data[start : start + ZSTD_BLOCK_BYTES])


# --- frames --------------------------------------------------------------------------
def _canonical_words(values: np.ndarray, layout: FrameLayout) -> np.ndarray:
    """Words whose stored-bit field holds ``values`` (offset binary when signed), with
    every other bit zero except, for signed data, the sign extension above High Bit."""
    word: type[np.unsignedinteger[Any]] = np.uint8 if layout.bits_allocated == 8 else np.uint16
    b, shift = layout.bits_stored, layout.shift
    words = values.astype(word, copy=False)
    if layout.signed:
        words = words ^ word(1 << (b - 1))  # offset binary back to two's complement
    if shift:
        words = words << word(shift)
    top = shift + b
    if layout.signed and top < layout.bits_allocated:
        extension = word(((1 << layout.bits_allocated) - 1) >> top << top)
        negative = (words >> word(top - 1)) & word(1)
        words = words | (negative * extension)
    return words


def _split(raw: bytes | bytearray, layout: FrameLayout) -> tuple[np.ndarray, np.ndarray | None]:
    """(unsigned sample values to code, residual words or None) of one frame."""
    words = np.frombuffer(raw, dtype=layout.word_dtype)
    if layout.big_endian:
        words = words.astype(np.uint16)
    b = layout.bits_stored
    mask = words.dtype.type((1 << b) - 1)
    if layout.shift == 0 and not layout.signed and int(words.max(initial=0)) <= mask:
        return words.reshape(layout.image_shape()), None  # the common case: no copy
    values = (words >> words.dtype.type(layout.shift)) & mask
    if layout.signed:
        values = values ^ words.dtype.type(1 << (b - 1))
    residual = words ^ _canonical_words(values, layout)
    return values.reshape(layout.image_shape()), residual if residual.any() else None


def _frame_bytes(values: np.ndarray, residual: bytes | None, layout: FrameLayout) -> memoryview:
    """The original bytes of a frame from its decoded values and residual: a byte view of
    a fresh array (not copied into ``bytes``: a mammogram frame is ~27 MB, and the
    copy cost as much as a third of the hashing the verification needs)."""
    words = np.ascontiguousarray(_canonical_words(values, layout))
    if layout.big_endian:
        words = np.ascontiguousarray(words.astype(">u2"))
    out = words.view(np.uint8).reshape(-1)
    if residual is not None:
        if len(residual) != out.size:
            raise ContainerError("frame residual has the wrong length")
        out = out ^ np.frombuffer(residual, np.uint8)
    return out.data


def encode_frame(
    raw: bytes | bytearray,
    layout: FrameLayout,
    codec: FrameCodec,
    residual_compressor: zstandard.ZstdCompressor,
    tuning: codecs.Tuning | None = None,
) -> bytes:
    """A verified ``F`` record for one frame of original bytes ``raw``.

    Raises :class:`CodecError` if the codec refuses the image and
    :class:`RoundTripError` if the record does not decode to ``raw`` exactly.
    """
    values, residual_words = _split(raw, layout)
    bits = codecs.precision_of(values, layout.bits_stored)
    codestream = codecs.encode(codec, values, bits, layout.planar, tuning)
    flags = (FLAG_BIG_ENDIAN if layout.big_endian else 0) | (FLAG_SIGNED if layout.signed else 0)
    flags |= FLAG_PLANAR if layout.planar else 0
    residual = b""
    if residual_words is not None:
        flags |= FLAG_RESIDUAL
        # The residual is defined on the stored bytes: original = canonical XOR residual.
        stored = residual_words.astype(layout.word_dtype) if layout.big_endian else residual_words
        residual = residual_compressor.compress(stored.tobytes())
    head = _FRAME_HEAD.pack(
        codec,
        flags,
        layout.bits_allocated,
        layout.bits_stored,
        layout.shift,
        layout.samples,
        0,
        layout.rows,
        layout.columns,
        len(codestream),
    )
    payload = head + codestream + residual
    try:
        decoded, decoded_residual, decoded_layout = _decode_frame_parts(payload)
        if (
            residual_words is None
            and not layout.signed
            and not layout.shift
            and not layout.big_endian
        ):
            # Values are the original words here: compare arrays, skip a frame copy.
            same = decoded_layout == layout and np.array_equal(decoded, values)
        else:
            same = _frame_bytes(decoded, decoded_residual, decoded_layout) == raw
    except (CodecError, ContainerError):
        same = False
    if not same:
        raise RoundTripError(f"{codecs.CODEC_NAMES[codec]} frame did not round-trip")
    return record(RECORD_FRAME, payload)


def decode_frame(payload: bytes | bytearray | memoryview) -> memoryview:
    """The original bytes of an ``F`` record's payload. Raises :class:`ContainerError`."""
    return _frame_bytes(*_decode_frame_parts(payload))


def _decode_frame_parts(
    payload: bytes | bytearray | memoryview,
) -> tuple[np.ndarray, bytes | None, FrameLayout]:
    if len(payload) < _FRAME_HEAD.size:
        raise ContainerError("frame record too short")
    (
        codec,
        flags,
        bits_allocated,
        bits_stored,
        shift,
        samples,
        _reserved,
        rows,
        columns,
        codestream_length,
    ) = _FRAME_HEAD.unpack_from(payload)
    if flags & ~_KNOWN_FLAGS or bits_allocated not in (8, 16) or samples not in (1, 3, 4):
        raise ContainerError("frame record has unknown flags or layout")
    if not 1 <= bits_stored <= bits_allocated or shift + bits_stored > bits_allocated:
        raise ContainerError("frame record bit layout is impossible")
    layout = FrameLayout(
        rows,
        columns,
        samples,
        bits_allocated,
        bits_stored,
        shift,
        bool(flags & FLAG_SIGNED),
        bool(flags & FLAG_PLANAR),
        bool(flags & FLAG_BIG_ENDIAN),
    )
    if layout.frame_bytes > MAX_RECORD_OUTPUT:
        raise ContainerError("frame record too large")
    end = _FRAME_HEAD.size + codestream_length
    if end > len(payload):
        raise ContainerError("frame codestream overruns its record")
    try:
        codestream = payload[_FRAME_HEAD.size : end]
        codecs.check_dimensions(codec, codestream, rows, columns, samples)
        decoded = codecs.decode(codec, codestream)
    except CodecError as exc:
        raise ContainerError(str(exc)) from None
    want = (rows, columns) if samples == 1 else (rows, columns, samples)
    if decoded.shape != want or decoded.dtype.kind != "u":
        raise ContainerError("decoded frame has the wrong shape")
    if int(decoded.max(initial=0)) >> bits_stored:
        raise ContainerError("decoded frame has values beyond its bits stored")
    if layout.planar:
        decoded = np.moveaxis(decoded, -1, 0)
    residual = None
    if flags & FLAG_RESIDUAL:
        try:
            residual = zstandard.ZstdDecompressor().decompress(
                payload[end:], max_output_size=layout.frame_bytes
            )
        except zstandard.ZstdError:
            raise ContainerError("frame residual does not decompress") from None
    elif end != len(payload):
        raise ContainerError("bytes after the frame codestream")
    return decoded, residual, layout


# --- reading -------------------------------------------------------------------------
def read_container(plaintext: ByteStream) -> Iterator[bytes | bytearray | memoryview]:
    """Yield the original bytes a container stream encodes, record by record.

    Raises :class:`ContainerError` on anything malformed, including a missing END
    record, bytes after it, or a total length that disagrees with it.
    """
    try:
        if plaintext.read_exact(len(CONTAINER_MAGIC)) != CONTAINER_MAGIC:
            raise ContainerError("not a trailerlink container (bad magic)")
        total = 0
        decompressor = zstandard.ZstdDecompressor()
        while True:
            kind, length = _RECORD_HEAD.unpack(plaintext.read_exact(_RECORD_HEAD.size))
            if kind == RECORD_END:
                if length != 8:
                    raise ContainerError("END record has the wrong length")
                (expected,) = struct.unpack(">Q", plaintext.read_exact(8))
                if expected != total:
                    raise ContainerError("container length disagrees with its END record")
                if not plaintext.at_end():
                    raise ContainerError("bytes after the END record")
                return
            if length > MAX_RECORD_OUTPUT:
                raise ContainerError("record larger than the format allows")
            payload = plaintext.read_exact(length)
            out: bytes | bytearray | memoryview
            if kind == RECORD_ZSTD:
                params = zstandard.get_frame_parameters(payload)
                if params.content_size > MAX_RECORD_OUTPUT:
                    raise ContainerError("zstd record without a plausible content size")
                try:
                    out = decompressor.decompress(payload)
                except zstandard.ZstdError:
                    raise ContainerError("zstd record does not decompress") from None
            elif kind == RECORD_RAW:
                out = payload
            elif kind == RECORD_FRAME:
                out = decode_frame(payload)
            else:
                raise ContainerError(f"unknown record type {kind:#04x}")
            total += len(out)
            yield out
    except UnexpectedEnd:
        raise ContainerError("container truncated") from None
    except zstandard.ZstdError:
        raise ContainerError("zstd record header is invalid") from None
