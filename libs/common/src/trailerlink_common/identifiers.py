"""The identifiers every hop checks, checked one way: DICOM UIDs, SHA-256 digests in hex
and the data centre's sealing key ids. A value that fails is never used to build a
path, a header or a query. Whole-string matches: a regex ``$`` would let a trailing
newline through."""

from __future__ import annotations

import re

# PS3.5 9.1: digits in dot-separated components, at most 64 characters. Leading zeros
# are not refused here (some modalities send them; PACS accept them).
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# `dc-` and 16 hex digits of the public key's fingerprint (trailerlink_crypto.keys).
KEY_ID_PATTERN = re.compile(r"dc-[0-9a-f]{16}")
UID_MAX_LENGTH = 64


def is_uid(value: object) -> bool:
    """A DICOM UID: 1-64 characters of dot-separated decimal components."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= UID_MAX_LENGTH
        and _UID.fullmatch(value) is not None
    )


def is_sha256_hex(value: object) -> bool:
    """A SHA-256 digest as 64 lower-case hex digits."""
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def is_key_id(value: object) -> bool:
    """A data-centre sealing key id (``dc-`` and 16 lower-case hex digits)."""
    return isinstance(value, str) and KEY_ID_PATTERN.fullmatch(value) is not None
