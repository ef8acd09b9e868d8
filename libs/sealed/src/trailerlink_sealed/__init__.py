"""Byte-exact lossless DICOM container and the sealed object format v1.

One implementation for both ends: the codec seals on the trailer, the ingest opens in
the data centre. docs/sealed-format.md is the specification.

Trailer::

    keys = RecipientKeyring.load(Path("/etc/trailerlink/sealing-keys"), current_key_id)
    result = seal(lambda: decrypt_file(spool_file, spool_keys), out_path, keys.current,
                  expected_size=..., expected_sha256=...)

Data centre::

    keyring = OpeningKeyring.load_dir(Path("/etc/trailerlink/sealing-private-keys"))
    unseal_to_file(sealed_path, part10_path, keyring)   # verified, durable
"""

from trailerlink_crypto.chunked import IntegrityError
from trailerlink_crypto.keys import (
    OpeningKey,
    OpeningKeyring,
    RecipientKey,
    RecipientKeyring,
    UnknownKeyError,
    key_id_for,
)

from trailerlink_sealed.container import ContainerError
from trailerlink_sealed.sealed import (
    FORMAT_VERSION,
    KeyUnwrapError,
    SealedFormatError,
    SealedHeader,
    SealOptions,
    SealResult,
    SourceMismatchError,
    UnsealResult,
    open_sealed,
    read_sealed_header,
    seal,
    unseal_to_bytes,
    unseal_to_file,
)

__all__ = [
    "FORMAT_VERSION",
    "ContainerError",
    "IntegrityError",
    "KeyUnwrapError",
    "OpeningKey",
    "OpeningKeyring",
    "RecipientKey",
    "RecipientKeyring",
    "SealOptions",
    "SealResult",
    "SealedFormatError",
    "SealedHeader",
    "SourceMismatchError",
    "UnknownKeyError",
    "UnsealResult",
    "key_id_for",
    "open_sealed",
    "read_sealed_header",
    "seal",
    "unseal_to_bytes",
    "unseal_to_file",
]
