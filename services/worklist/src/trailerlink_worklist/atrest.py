"""Patient data in the cache, encrypted field by field with AES-256-GCM.

The key is the worklist's own at-rest key: 32 bytes, raw or base64, in a file that is a
Kubernetes Secret — loaded exactly as the gateway loads the spool key
(:class:`trailerlink_crypto.atrest.SpoolKey`), but a different Secret, so neither
service can read the other's data. Two keys are derived from it with HKDF-SHA256: one
encrypts, one makes fingerprints (HMAC-SHA256) of steps, so the cache's change
detection needs no plaintext hash of a woman's details.

A sealed field is ``version (1 byte) || nonce (12 random bytes) || ciphertext || tag``.
Its associated data names the field and the row it belongs to (table.column and the
row's key columns), so a ciphertext copied into another row, another column or another
table fails authentication instead of showing one woman's details under another's
booking. Random 96-bit nonces are safe for far more than 2**32 seals per key; the cache
makes a few thousand a day.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from trailerlink_common.config import ConfigError
from trailerlink_crypto.atrest import SpoolKey
from trailerlink_crypto.chunked import KEY_BYTES, IntegrityError

VERSION = b"\x01"
NONCE_BYTES = 12
_AAD_LABEL = b"trailerlink worklist cache v1"
_ENCRYPT_INFO = b"trailerlink worklist cache v1 encrypt"
_FINGERPRINT_INFO = b"trailerlink worklist cache v1 fingerprint"

__all__ = ["CacheKeyError", "FieldCipher", "IntegrityError", "load_key"]


class CacheKeyError(ConfigError):
    """The key file is missing or unusable, or not the key the cache was written with."""


def load_key(path: Path) -> SpoolKey:
    """Load the worklist key file (32 raw bytes or their base64).

    Raises :class:`CacheKeyError` naming the file and what is wrong — never its content.
    """
    try:
        return SpoolKey.from_file(path)
    except OSError as exc:
        raise CacheKeyError(
            f"TRAILERLINK_WORKLIST_KEY_FILE: cannot read {path} "
            f"({exc.strerror or type(exc).__name__}); mount the worklist "
            "key Secret there"
        ) from None
    except ValueError:
        raise CacheKeyError(
            f"TRAILERLINK_WORKLIST_KEY_FILE: {path} does not hold a "
            f"{KEY_BYTES}-byte key (raw, or base64 of one)"
        ) from None


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


def _aad(field: str, row: tuple[str, ...]) -> bytes:
    # Length-prefixed parts: no choice of values can make two rows' data collide.
    out = bytearray(_AAD_LABEL)
    for part in (field, *row):
        data = part.encode("utf-8")
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


class FieldCipher:
    """Seals and opens the cache's patient fields. Thread-safe (holds no state per call)."""

    def __init__(self, key: SpoolKey) -> None:
        self._aead = AESGCM(_derive(key.key, _ENCRYPT_INFO))
        self._mac_key = _derive(key.key, _FINGERPRINT_INFO)
        # Not secret: tells a cache written with another key apart at start-up.
        self.key_id = (
            "worklist-" + hashlib.sha256(b"trailerlink worklist key id" + key.key).hexdigest()[:12]
        )

    def seal(self, field: str, row: tuple[str, ...], plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` for column ``field`` ("table.column") of the row whose
        key columns are ``row``."""
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, _aad(field, row))

    def open(self, field: str, row: tuple[str, ...], sealed: bytes) -> bytes:
        """The plaintext of a sealed field. Raises :class:`IntegrityError` (naming the
        column only) if it was altered, moved from another row or sealed with another
        key."""
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != VERSION:
            raise IntegrityError(f"worklist cache: {field} is not a sealed value")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + NONCE_BYTES :], _aad(field, row))
        except InvalidTag:
            raise IntegrityError(
                f"worklist cache: {field} of a row failed authentication "
                "(altered, moved between rows, or another key)"
            ) from None

    def seal_text(self, field: str, row: tuple[str, ...], text: str) -> bytes:
        return self.seal(field, row, text.encode("utf-8"))

    def open_text(self, field: str, row: tuple[str, ...], sealed: object) -> str:
        if not isinstance(sealed, bytes):
            raise IntegrityError(f"worklist cache: {field} is not a sealed value")
        return self.open(field, row, sealed).decode("utf-8")

    def fingerprint(self, text: str) -> str:
        """Keyed hash of ``text`` (HMAC-SHA256, hex): equal texts, equal fingerprints;
        without the key, nothing to test a guess against."""
        return hmac.new(self._mac_key, text.encode("utf-8"), hashlib.sha256).hexdigest()
