"""Data-centre keys for sealing: public keys on the trailer, private keys at the ingest.

Each sealed object has a fresh random 256-bit data key, wrapped for one data-centre key
with HPKE (RFC 9180) in base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM. Why X25519 rather than RSA-OAEP (docs/sealed-format.md, "Key wrap"):
32-byte keys that fit in a Secret and a config map, no padding modes to get wrong,
constant-time by construction, a fresh ephemeral key per object, and HPKE is a
published standard with independent implementations (Go, Java/Tink, Rust, OpenSSL
3.2+), so another team's reader needs no trailerlink code.

A key id names a key pair without revealing it: ``dc-`` plus the first 16 hex digits
of SHA-256 over a label and the raw public key. Both sides compute it, so the id in a
sealed header always matches the key that can open it. Keys are PEM files: public keys
as SubjectPublicKeyInfo, private keys as PKCS#8.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

_KEY_ID_LABEL = b"trailerlink sealed key id v1\x00"


class UnknownKeyError(LookupError):
    """No key with the wanted key id is loaded."""


def key_id_for(public_raw: bytes) -> str:
    """The key id of a raw 32-byte X25519 public key."""
    return "dc-" + hashlib.sha256(_KEY_ID_LABEL + public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class RecipientKey:
    """A data-centre public key: what a trailer seals for. Cannot open anything."""

    public_key: X25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        return key_id_for(self.raw)

    def to_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_pem(cls, data: bytes) -> RecipientKey:
        """Parse a PEM public key. Raises ``ValueError`` for anything else — including
        a private key, which must never be configured on a trailer."""
        if b"PRIVATE KEY" in data:
            raise ValueError("a private key was given where only a public key belongs")
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, X25519PublicKey):
            raise ValueError("sealing keys must be X25519 public keys")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> RecipientKey:
        return cls.from_pem(Path(path).read_bytes())


@dataclass(frozen=True)
class OpeningKey:
    """A data-centre private key (ingest only)."""

    private_key: X25519PrivateKey

    @classmethod
    def generate(cls) -> OpeningKey:
        return cls(X25519PrivateKey.generate())

    @property
    def recipient(self) -> RecipientKey:
        return RecipientKey(self.private_key.public_key())

    @property
    def key_id(self) -> str:
        return self.recipient.key_id

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> OpeningKey:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, X25519PrivateKey):
            raise ValueError("sealing keys must be X25519 private keys")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> OpeningKey:
        return cls.from_pem(Path(path).read_bytes())


class OpeningKeyring:
    """Every private key the ingest may still need, by key id (rotation keeps old ones)."""

    def __init__(self, keys: Iterable[OpeningKey]) -> None:
        self._by_id = {k.key_id: k for k in keys}

    def get(self, key_id: str) -> OpeningKey:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise UnknownKeyError(f"no private key loaded with key id {key_id!r}") from None

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._by_id)

    @classmethod
    def load_dir(cls, directory: Path) -> OpeningKeyring:
        """Every ``*.pem`` private key in ``directory``."""
        return cls(OpeningKey.load(p) for p in sorted(Path(directory).glob("*.pem")))


class RecipientKeyring:
    """The public keys a trailer knows and which one is current (used for new seals)."""

    def __init__(self, keys: Iterable[RecipientKey], current_key_id: str = "") -> None:
        self._by_id = {k.key_id: k for k in keys}
        if not self._by_id:
            raise ValueError("no data-centre public key configured")
        if not current_key_id:
            if len(self._by_id) != 1:
                raise ValueError(
                    "several data-centre keys are configured: name the current "
                    f"one (known ids: {', '.join(sorted(self._by_id))})"
                )
            current_key_id = next(iter(self._by_id))
        if current_key_id not in self._by_id:
            raise ValueError(
                f"current key id {current_key_id!r} is not among the configured "
                f"keys ({', '.join(sorted(self._by_id))})"
            )
        self.current = self._by_id[current_key_id]

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._by_id)

    @classmethod
    def load(cls, path: Path, current_key_id: str = "") -> RecipientKeyring:
        """Load a PEM file or every ``*.pem`` in a directory. Raises ``ValueError`` if
        any of them is a private key or not an X25519 public key."""
        path = Path(path)
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        return cls((RecipientKey.load(p) for p in files), current_key_id)
