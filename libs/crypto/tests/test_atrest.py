"""Encrypted spool files: durable, unreadable as plaintext, and tamper-evident."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from trailerlink_crypto.atrest import (
    EncryptedFileWriter,
    SpoolKey,
    SpoolKeyring,
    UnknownKeyError,
    decrypt_to_bytes,
    encrypt_to_file,
)
from trailerlink_crypto.chunked import IntegrityError


def test_round_trip_and_no_plaintext_on_disk(tmp_path: Path) -> None:
    key = SpoolKey.generate()
    data = b"DICM" + os.urandom(3000) + b"DICM-MARKER-PLAINTEXT"
    path = tmp_path / "obj.tls"
    encrypt_to_file(path, [data[:100], data[100:]], key, chunk_size=256)
    assert b"DICM-MARKER-PLAINTEXT" not in path.read_bytes()
    assert decrypt_to_bytes(path, SpoolKeyring(key)) == data


def test_push_writer_matches_pull_writer(tmp_path: Path) -> None:
    key = SpoolKey.generate()
    data = os.urandom(5000)
    with EncryptedFileWriter(tmp_path / "a", key, chunk_size=512) as writer:
        for i in range(0, len(data), 333):
            writer.write(data[i : i + 333])
    assert writer.stored_size == (tmp_path / "a").stat().st_size
    assert decrypt_to_bytes(tmp_path / "a", SpoolKeyring(key)) == data


@pytest.mark.parametrize("piece", [1, 511, 512, 513, 1024, 1500, 4096])
@pytest.mark.parametrize("total", [0, 512, 2048, 5000])
def test_push_writer_cuts_chunks_as_the_pull_writer_whatever_the_piece_size(
    tmp_path: Path, piece: int, total: int
) -> None:
    # Pieces larger than a chunk are sealed straight from the caller's buffer; the
    # layout (and so the stored size) must not depend on how the data was cut.
    key = SpoolKey.generate()
    data = os.urandom(total)
    with EncryptedFileWriter(tmp_path / "push", key, chunk_size=512) as writer:
        for i in range(0, len(data), piece):
            writer.write(memoryview(data)[i : i + piece])
    pulled = encrypt_to_file(tmp_path / "pull", [data], key, chunk_size=512)
    assert writer.stored_size == pulled == (tmp_path / "push").stat().st_size
    assert decrypt_to_bytes(tmp_path / "push", SpoolKeyring(key)) == data


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def broken() -> object:
        yield b"x" * 100
        raise OSError("disk gone")

    with pytest.raises(OSError):
        encrypt_to_file(tmp_path / "obj", broken(), SpoolKey.generate())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_rotated_keys_still_read_and_unknown_key_refused(tmp_path: Path) -> None:
    old, new = SpoolKey.generate(), SpoolKey.generate()
    encrypt_to_file(tmp_path / "old", [b"before rotation"], old)
    assert decrypt_to_bytes(tmp_path / "old", SpoolKeyring(new, [old])) == b"before rotation"
    with pytest.raises(UnknownKeyError):
        decrypt_to_bytes(tmp_path / "old", SpoolKeyring(new))


def test_tampered_header_or_body_refused(tmp_path: Path) -> None:
    key = SpoolKey.generate()
    path = tmp_path / "obj"
    encrypt_to_file(path, [os.urandom(1000)], key, chunk_size=256)
    original = path.read_bytes()
    for position in (len(original) - 20, 40):  # body, then salt in the header
        tampered = bytearray(original)
        tampered[position] ^= 0x80
        path.write_bytes(bytes(tampered))
        with pytest.raises(IntegrityError):
            decrypt_to_bytes(path, SpoolKeyring(key))


def test_key_file_formats(tmp_path: Path) -> None:
    key = SpoolKey.generate()
    key.write_file(tmp_path / "k")
    assert SpoolKey.from_file(tmp_path / "k") == key
    (tmp_path / "raw").write_bytes(key.key)
    assert SpoolKey.from_file(tmp_path / "raw") == key
    (tmp_path / "bad").write_bytes(b"short")
    with pytest.raises(ValueError, match="spool key file"):
        SpoolKey.from_file(tmp_path / "bad")
