"""The codec follows a key rotation without a restart: a new public key plus a ``current``
marker in its key directory (what the uplink's key sync writes) is used for the next
object; a marker naming a key that is not there, or a private key, changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from trailerlink_codec.keys import SealingKeys
from trailerlink_codec.sealer import Sealer, SealJob
from trailerlink_crypto.atrest import SpoolKeyring
from trailerlink_sealed import OpeningKey, OpeningKeyring, SealOptions, unseal_to_bytes
from trailerlink_sealed.testdata import MGSpec

from .conftest import Spool, SpoolObject


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # as the key sync does: atomically


def _job(obj: SpoolObject) -> SealJob:
    event = obj.event("t")
    return SealJob(
        event.spool_path,
        event.file_size_bytes,
        event.file_sha256,
        event.dataset_sha256,
        event.object.sop_instance_uid,
    )


def test_new_current_key_is_used_for_the_next_object_without_restart(
    spool: Spool, tmp_path: Path, public_keys_dir: Path, dc_key: OpeningKey
) -> None:
    keys = SealingKeys(public_keys_dir)
    sealer = Sealer(spool.root, SpoolKeyring(spool.key), tmp_path / "out", keys, SealOptions())
    first_obj = spool.put(MGSpec(rows=64, cols=48, seed=1))
    first = sealer.seal(_job(first_obj))
    assert first.key_id == dc_key.key_id

    rotated = OpeningKey.generate()
    _write(public_keys_dir / f"{rotated.key_id}.pem", rotated.recipient.to_pem())
    _write(public_keys_dir / "current", f"{rotated.key_id}\n".encode())
    obj = spool.put(MGSpec(rows=64, cols=48, seed=2))
    second = sealer.seal(_job(obj))
    assert second.key_id == rotated.key_id
    assert unseal_to_bytes(second.absolute_path, OpeningKeyring([rotated])) == obj.data
    # The old key stays known: objects sealed for it before the rotation are still valid.
    assert keys.key_ids == sorted([dc_key.key_id, rotated.key_id])
    assert sealer.seal(_job(first_obj)).reused


@pytest.mark.parametrize("change", ["marker for a missing key", "private key"])
def test_a_change_that_does_not_load_keeps_the_keys_in_use(
    tmp_path: Path, public_keys_dir: Path, dc_key: OpeningKey, change: str
) -> None:
    keys = SealingKeys(public_keys_dir)
    other = OpeningKey.generate()
    if change == "private key":
        _write(public_keys_dir / f"{other.key_id}.pem", other.to_pem())
        _write(public_keys_dir / "current", other.key_id.encode())
    else:
        _write(public_keys_dir / "current", other.key_id.encode())
    assert keys.current.key_id == dc_key.key_id
    assert keys.key_ids == [dc_key.key_id]


def test_start_up_refuses_a_private_key(tmp_path: Path, dc_key: OpeningKey) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / "dc.pem").write_bytes(dc_key.to_pem())
    with pytest.raises(ValueError, match="private key"):
        SealingKeys(directory)
