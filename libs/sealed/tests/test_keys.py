"""Key ids, rotation, and the rule that a trailer holds only public keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from trailerlink_sealed import (
    OpeningKey,
    OpeningKeyring,
    RecipientKey,
    RecipientKeyring,
    UnknownKeyError,
    key_id_for,
    read_sealed_header,
    seal,
    unseal_to_bytes,
)
from trailerlink_sealed.testdata import MGSpec, mg_file_bytes


def test_key_id_is_derived_from_the_public_key_and_stable() -> None:
    key = OpeningKey.generate()
    assert key.key_id == key.recipient.key_id == key_id_for(key.recipient.raw)
    assert key.key_id.startswith("dc-") and len(key.key_id) == 19
    again = RecipientKey.from_pem(key.recipient.to_pem())
    assert again.key_id == key.key_id
    assert OpeningKey.from_pem(key.to_pem()).key_id == key.key_id


def test_trailer_refuses_a_private_key_as_its_sealing_key(tmp_path: Path) -> None:
    (tmp_path / "dc.pem").write_bytes(OpeningKey.generate().to_pem())
    with pytest.raises(ValueError, match="private key"):
        RecipientKeyring.load(tmp_path)


def test_several_keys_need_a_named_current_one(tmp_path: Path) -> None:
    old, new = OpeningKey.generate(), OpeningKey.generate()
    (tmp_path / "old.pem").write_bytes(old.recipient.to_pem())
    (tmp_path / "new.pem").write_bytes(new.recipient.to_pem())
    with pytest.raises(ValueError, match="name the current"):
        RecipientKeyring.load(tmp_path)
    with pytest.raises(ValueError, match="not among"):
        RecipientKeyring.load(tmp_path, "dc-0000000000000000")
    ring = RecipientKeyring.load(tmp_path, new.key_id)
    assert ring.current.key_id == new.key_id
    assert set(ring.key_ids) == {old.key_id, new.key_id}


def test_rotation_objects_sealed_before_and_after_both_open(tmp_path: Path) -> None:
    old, new = OpeningKey.generate(), OpeningKey.generate()
    data = mg_file_bytes(MGSpec(rows=64, cols=48))
    source = tmp_path / "o.dcm"
    source.write_bytes(data)
    seal(source, tmp_path / "before.tls", old.recipient)
    seal(source, tmp_path / "after.tls", new.recipient)
    assert read_sealed_header(tmp_path / "before.tls").key_id == old.key_id
    assert read_sealed_header(tmp_path / "after.tls").key_id == new.key_id
    ingest = OpeningKeyring([old, new])
    assert unseal_to_bytes(tmp_path / "before.tls", ingest) == data
    assert unseal_to_bytes(tmp_path / "after.tls", ingest) == data
    # Once the old key is retired, its objects are refused by name, not misread.
    with pytest.raises(UnknownKeyError, match=old.key_id):
        unseal_to_bytes(tmp_path / "before.tls", OpeningKeyring([new]))


def test_ingest_loads_private_keys_from_a_directory(tmp_path: Path) -> None:
    keys = [OpeningKey.generate() for _ in range(2)]
    for i, key in enumerate(keys):
        (tmp_path / f"k{i}.pem").write_bytes(key.to_pem())
    ring = OpeningKeyring.load_dir(tmp_path)
    assert ring.key_ids == sorted(k.key_id for k in keys)


def test_operator_tools_make_keys_print_ids_and_open_objects(tmp_path: Path, capsys) -> None:
    import json

    from trailerlink_sealed.__main__ import main

    keys = tmp_path / "ingest-keys"
    keys.mkdir()
    assert main(["keygen", str(keys / "dc.pem"), str(tmp_path / "dc.pub.pem")]) == 0
    key_id = capsys.readouterr().out.strip()
    assert (keys / "dc.pem").stat().st_mode & 0o777 == 0o600
    main(["key-id", str(tmp_path / "dc.pub.pem")])
    assert capsys.readouterr().out.strip() == key_id

    data = mg_file_bytes(MGSpec(rows=48, cols=32))
    (tmp_path / "o.dcm").write_bytes(data)
    seal(tmp_path / "o.dcm", tmp_path / "o.tls", RecipientKey.load(tmp_path / "dc.pub.pem"))
    main(["header", str(tmp_path / "o.tls")])
    header = json.loads(capsys.readouterr().out)
    assert header["key_id"] == key_id and header["codec"] == "jpegls+zstd"
    main(["open", str(tmp_path / "o.tls"), str(tmp_path / "back.dcm"), "--keys", str(keys)])
    assert (tmp_path / "back.dcm").read_bytes() == data
