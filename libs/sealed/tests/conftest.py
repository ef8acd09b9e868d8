"""Fixtures of the sealed-format tests: one data-centre key pair per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from trailerlink_sealed import OpeningKey, OpeningKeyring, SealOptions, seal, unseal_to_bytes


@pytest.fixture(scope="session")
def opening_key() -> OpeningKey:
    return OpeningKey.generate()


@pytest.fixture(scope="session")
def keyring(opening_key: OpeningKey) -> OpeningKeyring:
    return OpeningKeyring([opening_key])


@pytest.fixture
def roundtrip(
    tmp_path: Path, opening_key: OpeningKey, keyring: OpeningKeyring
) -> Callable[..., tuple[bytes, object]]:
    """Seal ``data`` and open it again: returns (reopened bytes, SealResult)."""
    counter = iter(range(1_000_000))

    def run(data: bytes, **options: object) -> tuple[bytes, object]:
        n = next(counter)
        source = tmp_path / f"original-{n}.dcm"
        source.write_bytes(data)
        sealed = tmp_path / f"sealed-{n}.tls"
        result = seal(source, sealed, opening_key.recipient, options=SealOptions(**options))
        return unseal_to_bytes(sealed, keyring), result

    return run
