"""Sealed object format v1: write (trailer) and open (data centre).

A sealed object is a header followed by the container (``container.py``) encrypted in
fixed-size AES-256-GCM chunks (``trailerlink_crypto.chunked``, the STREAM
construction) under a random per-object data key; the data key is wrapped for one
data-centre X25519 key with HPKE (``keys.py``). The whole header is the associated data
of every chunk, so a changed header byte fails the first chunk. docs/sealed-format.md
is the byte-level specification; these modules are its reference implementation.

The trailer calls :func:`seal`; the ingest calls :func:`open_sealed` or
:func:`unseal_to_file`. Both stream in bounded memory (one frame, or one chunk, at a
time).

This module only gathers the names it has always offered; the code lives in
:mod:`~trailerlink_sealed.header` (the header: constants, building, parsing),
:mod:`~trailerlink_sealed.sealing` (plan, container body, sealing) and
:mod:`~trailerlink_sealed.opening` (opening and verifying). They are not named after
:func:`seal` and friends because the package re-exports those functions under their own
names, which would hide a module of the same name.
"""

from trailerlink_sealed.header import (
    BODY_ALGORITHM,
    F_BODY_ALGORITHM,
    F_CHUNK_SIZE,
    F_CODEC,
    F_CODEC_PARAMS,
    F_CREATED_AT,
    F_DATASET_OFFSET,
    F_DATASET_SHA256,
    F_KEY_ID,
    F_KEY_WRAP,
    F_NONCE_PREFIX,
    F_ORIGINAL_SHA256,
    F_ORIGINAL_SIZE,
    F_PRODUCER,
    F_SOP_INSTANCE_UID,
    F_WRAPPED_KEY,
    FORMAT_VERSION,
    KEY_WRAP_ALGORITHM,
    MAGIC,
    MAX_CHUNK_SIZE,
    MAX_HEADER_BYTES,
    SealedFormatError,
    SealedHeader,
    read_sealed_header,
)
from trailerlink_sealed.opening import (
    KeyUnwrapError,
    UnsealResult,
    open_sealed,
    unseal_to_bytes,
    unseal_to_file,
)
from trailerlink_sealed.sealing import (
    CODEC_ENCAPSULATED,
    CODEC_OPAQUE,
    SealOptions,
    SealResult,
    Source,
    SourceMismatchError,
    seal,
)

__all__ = [
    "BODY_ALGORITHM",
    "CODEC_ENCAPSULATED",
    "CODEC_OPAQUE",
    "FORMAT_VERSION",
    "F_BODY_ALGORITHM",
    "F_CHUNK_SIZE",
    "F_CODEC",
    "F_CODEC_PARAMS",
    "F_CREATED_AT",
    "F_DATASET_OFFSET",
    "F_DATASET_SHA256",
    "F_KEY_ID",
    "F_KEY_WRAP",
    "F_NONCE_PREFIX",
    "F_ORIGINAL_SHA256",
    "F_ORIGINAL_SIZE",
    "F_PRODUCER",
    "F_SOP_INSTANCE_UID",
    "F_WRAPPED_KEY",
    "KEY_WRAP_ALGORITHM",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "MAX_HEADER_BYTES",
    "KeyUnwrapError",
    "SealOptions",
    "SealResult",
    "SealedFormatError",
    "SealedHeader",
    "Source",
    "SourceMismatchError",
    "UnsealResult",
    "open_sealed",
    "read_sealed_header",
    "seal",
    "unseal_to_bytes",
    "unseal_to_file",
]
